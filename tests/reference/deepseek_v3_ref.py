#!/usr/bin/python3
"""An independent numpy reference of the DeepSeek-V3 (and V2) forward pass.

Written from the architecture as DeepSeek's `inference/model.py` and Hugging Face's
`modeling_deepseek.py` define it; it shares no code with the C++ engine and never reads its output.
Compute is float64 by default (float32 on request, to see how far an fp32 engine may drift).

    python3 deepseek_v3_ref.py --model DIR --tokens 3,17,42 --out FILE
        [--dtype float64|float32] [--attention naive|absorbed] [--mode prefill|decode]

writes raw little-endian float32 logits [num_tokens, vocab] for every position.

Where model.py and Hugging Face differ, this follows the choices fixed in epinfer's issue 3:
  * YaRN is applied always, as Hugging Face does (model.py only when max_seq_len > original):
    floor/ceil correction range, ramp (i - low) / (high - low) (+0.001 only when low == high),
    cos/sin x mscale(factor, mscale) / mscale(factor, mscale_all_dim), softmax scale x
    mscale(factor, mscale_all_dim)^2 when mscale_all_dim is set.
  * RoPE rotates interleaved pairs (2i, 2i+1) as model.py does; Hugging Face's de-interleave +
    rotate_half is the same rotation with the rope dimensions permuted, which q.k does not see.
  * Gate: the group score of noaux_tc is the sum of the group's top-2 selection scores
    (Hugging Face: by topk_method; model.py: when the bias exists); dropped groups are masked with
    -inf (model.py since 2025-02-14; Hugging Face masks with 0.0); weights are the unbiased scores,
    divided by their sum when norm_topk_prob and top_k > 1 (Hugging Face; model.py: whenever the
    scoring is sigmoid), then x routed_scaling_factor.
Top-k ties are broken towards the lower index (torch.topk leaves them unspecified).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


class ConfigError(ValueError):
    pass


# Hugging Face DeepseekV3Config defaults for fields a config.json may leave out.
_DEFAULTS = {
    "moe_layer_freq": 1, "first_k_dense_replace": 0, "n_shared_experts": None,
    "n_routed_experts": None, "routed_scaling_factor": 1.0, "topk_method": "greedy",
    "n_group": None, "topk_group": None, "num_experts_per_tok": None, "norm_topk_prob": False,
    "scoring_func": "softmax", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False,
    "q_lora_rank": None, "max_position_embeddings": 4096, "moe_intermediate_size": None,
    "intermediate_size": None, "quantization_config": None,
}
_REQUIRED = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"]


class Config:
    """The architecture fields of a Hugging Face DeepSeek-V2/V3 config.json."""

    def __init__(self, d):
        d = dict(d)
        for k in _REQUIRED:
            if d.get(k) is None:
                raise ConfigError("config.json: missing required field %r" % k)
        for k, v in _DEFAULTS.items():
            d.setdefault(k, v)
        self.raw = d
        for k, v in d.items():
            setattr(self, k, v)
        if self.q_lora_rank == 0:
            self.q_lora_rank = None  # model.py's convention for "no q LoRA"
        if self.hidden_act != "silu":
            raise ConfigError("config.json: hidden_act %r is not supported (silu)" % self.hidden_act)
        if self.scoring_func not in ("sigmoid", "softmax"):
            raise ConfigError("config.json: scoring_func %r (want sigmoid or softmax)"
                              % self.scoring_func)
        if self.n_routed_experts:
            if self.topk_method not in ("noaux_tc", "group_limited_greedy", "greedy", "gready"):
                raise ConfigError("config.json: topk_method %r is not supported" % self.topk_method)
            for k in ("num_experts_per_tok", "moe_intermediate_size"):
                if not getattr(self, k):
                    raise ConfigError("config.json: %s is required with n_routed_experts" % k)
            if self.n_group and self.n_routed_experts % self.n_group:
                raise ConfigError("config.json: n_routed_experts %d not divisible by n_group %d"
                                  % (self.n_routed_experts, self.n_group))
        if self.qk_rope_head_dim % 2:
            raise ConfigError("config.json: qk_rope_head_dim must be even")
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        block = (128, 128)
        qc = self.quantization_config or {}
        if qc.get("weight_block_size"):
            block = tuple(int(b) for b in qc["weight_block_size"])
        self.weight_block = block

    @classmethod
    def load(cls, model_dir):
        path = os.path.join(model_dir, "config.json")
        try:
            with open(path) as f:
                return cls(json.load(f))
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError("%s: not valid JSON: %s" % (path, e))

    def is_moe_layer(self, i):
        """Hugging Face DeepseekV3DecoderLayer: MoE when experts exist, i >= first_k_dense_replace
        and i % moe_layer_freq == 0; otherwise the dense MLP of intermediate_size."""
        return (self.n_routed_experts is not None and i >= self.first_k_dense_replace
                and i % self.moe_layer_freq == 0)


# ---------------------------------------------------------------------------------------------
# Elementary functions
# ---------------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(var + eps) * w


def sigmoid(x):
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def silu(x):
    return x * sigmoid(x)


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def linear(x, w, b=None):
    """y = x W^T (+ b); W is [out, in] as stored in the checkpoint."""
    y = x @ w.T
    return y if b is None else y + b


def swiglu(x, gate_w, up_w, down_w):
    """DeepseekV3MLP / model.py MLP: down(silu(gate(x)) * up(x))."""
    return linear(silu(linear(x, gate_w)) * linear(x, up_w), down_w)


# ---------------------------------------------------------------------------------------------
# RoPE and YaRN (Hugging Face DeepseekV3YarnRotaryEmbedding, applied always)
# ---------------------------------------------------------------------------------------------

def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_find_correction_dim(num_rotations, dim, base, max_position_embeddings):
    return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (
        2 * math.log(base))


def yarn_find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings):
    low = math.floor(yarn_find_correction_dim(low_rot, dim, base, max_position_embeddings))
    high = math.ceil(yarn_find_correction_dim(high_rot, dim, base, max_position_embeddings))
    return max(low, 0), min(high, dim - 1)


def yarn_linear_ramp_mask(low, high, n):
    if low == high:
        high += 0.001
    return np.clip((np.arange(n, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def rope_params(cfg):
    """(inv_freq [d/2], cos/sin multiplier, softmax scale) for the config's rope_scaling."""
    d = cfg.qk_rope_head_dim
    base = float(cfg.rope_theta)
    freq_extra = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    softmax_scale = cfg.qk_head_dim ** -0.5
    rs = cfg.rope_scaling
    if rs is None:
        return freq_extra, 1.0, softmax_scale
    kind = rs.get("type", rs.get("rope_type"))
    if kind != "yarn":
        raise ConfigError("config.json: rope_scaling type %r is not supported (yarn or null)"
                          % kind)
    factor = float(rs["factor"])
    original = rs.get("original_max_position_embeddings", 4096)
    beta_fast = rs.get("beta_fast", 32)
    beta_slow = rs.get("beta_slow", 1)
    mscale = rs.get("mscale", 1)
    mscale_all_dim = rs.get("mscale_all_dim", 0)
    freq_inter = freq_extra / factor
    low, high = yarn_find_correction_range(beta_fast, beta_slow, d, base, original)
    inv_freq_mask = 1.0 - yarn_linear_ramp_mask(low, high, d // 2)
    inv_freq = freq_inter * (1 - inv_freq_mask) + freq_extra * inv_freq_mask
    cos_sin_scale = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
    if mscale_all_dim:
        m = yarn_get_mscale(factor, mscale_all_dim)
        softmax_scale = softmax_scale * m * m
    return inv_freq, cos_sin_scale, softmax_scale


def rope_tables(cfg, positions):
    """cos, sin [len(positions), d/2] (already times the YaRN cos/sin multiplier)."""
    inv_freq, scale, _ = rope_params(cfg)
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)
    return np.cos(angles) * scale, np.sin(angles) * scale


def apply_rope(x, cos, sin):
    """Rotates interleaved pairs (x[2i], x[2i+1]) by the angle of column i (model.py's
    view_as_complex(x) * freqs_cis). x: [T, ..., d]; cos, sin: [T, d/2]."""
    shape = (cos.shape[0],) + (1,) * (x.ndim - 2) + (cos.shape[1],)
    c, s = cos.reshape(shape), sin.reshape(shape)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


# ---------------------------------------------------------------------------------------------
# MoE gate
# ---------------------------------------------------------------------------------------------

def _topk_desc(values, k):
    """Indices of the k largest per row, largest first, ties to the lower index."""
    order = np.argsort(-values, axis=-1, kind="stable")
    return order[..., :k]


def gate_scores(x, gate_w, scoring_func):
    logits = linear(x, gate_w)
    if scoring_func == "sigmoid":
        return sigmoid(logits)
    return softmax(logits, axis=-1)


def route(scores, *, top_k, topk_method="noaux_tc", n_group=None, topk_group=None, bias=None,
          norm_topk_prob=True, routed_scaling_factor=1.0, details=False):
    """Expert choice from the gate scores (after sigmoid/softmax), [T, E] or [E].

    Returns (indices [T, k], weights [T, k]) and, with details=True, a dict with the selection
    scores, the kept groups and the margins that decide the choice (a near-tie there means a
    float32 engine may legitimately choose differently)."""
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    single = scores.ndim == 1
    if single:
        scores = scores[None, :]
    t, e = scores.shape
    choice = scores if bias is None else scores + np.asarray(bias, dtype=scores.dtype)
    masked = choice.copy()
    kept_groups = None
    group_scores = None
    if topk_method in ("noaux_tc", "group_limited_greedy") and n_group and n_group > 1:
        per = e // n_group
        grouped = choice.reshape(t, n_group, per)
        if topk_method == "noaux_tc":
            if per < 2:
                raise ValueError("noaux_tc needs at least 2 experts per group")
            group_scores = np.sort(grouped, axis=-1)[..., -2:].sum(axis=-1)
        else:
            group_scores = grouped.max(axis=-1)
        kept_groups = _topk_desc(group_scores, topk_group)
        drop = np.ones((t, n_group), dtype=bool)
        np.put_along_axis(drop, kept_groups, False, axis=1)
        masked = np.where(np.repeat(drop, per, axis=1), -np.inf, choice)
    elif topk_method not in ("noaux_tc", "group_limited_greedy", "greedy", "gready"):
        raise ValueError("unknown topk_method %r" % topk_method)
    idx = _topk_desc(masked, top_k)
    weights = np.take_along_axis(scores, idx, axis=1)
    if top_k > 1 and norm_topk_prob:
        weights = weights / (weights.sum(axis=-1, keepdims=True) + 1e-20)
    weights = weights * routed_scaling_factor
    if single:
        idx, weights = idx[0], weights[0]
    if not details:
        return idx, weights
    srt = np.sort(masked, axis=-1)[:, ::-1]
    expert_margin = srt[:, top_k - 1] - srt[:, top_k] if top_k < e else np.full(t, np.inf)
    if group_scores is not None and topk_group < n_group:
        gs = np.sort(group_scores, axis=-1)[:, ::-1]
        group_margin = gs[:, topk_group - 1] - gs[:, topk_group]
    else:
        group_margin = np.full(t, np.inf)
    return idx, weights, {"choice": choice, "kept_groups": kept_groups,
                          "expert_margin": np.where(np.isnan(expert_margin), np.inf, expert_margin),
                          "group_margin": group_margin}


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

def hf_tensor_shapes(cfg):
    """{name: shape} of every tensor of a Hugging Face DeepSeek-V2/V3 checkpoint with this config
    (the main model: no MTP layers, no fp8 `_scale_inv` companions)."""
    H, D = cfg.num_attention_heads, cfg.hidden_size
    t = {"model.embed_tokens.weight": (cfg.vocab_size, D), "model.norm.weight": (D,)}
    if not cfg.tie_word_embeddings:
        t["lm_head.weight"] = (cfg.vocab_size, D)
    for i in range(cfg.num_hidden_layers):
        p = "model.layers.%d." % i
        t[p + "input_layernorm.weight"] = (D,)
        t[p + "post_attention_layernorm.weight"] = (D,)
        a = p + "self_attn."
        if cfg.q_lora_rank:
            t[a + "q_a_proj.weight"] = (cfg.q_lora_rank, D)
            t[a + "q_a_layernorm.weight"] = (cfg.q_lora_rank,)
            t[a + "q_b_proj.weight"] = (H * cfg.qk_head_dim, cfg.q_lora_rank)
        else:
            t[a + "q_proj.weight"] = (H * cfg.qk_head_dim, D)
        t[a + "kv_a_proj_with_mqa.weight"] = (cfg.kv_lora_rank + cfg.qk_rope_head_dim, D)
        t[a + "kv_a_layernorm.weight"] = (cfg.kv_lora_rank,)
        t[a + "kv_b_proj.weight"] = (H * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                                     cfg.kv_lora_rank)
        t[a + "o_proj.weight"] = (D, H * cfg.v_head_dim)
        m = p + "mlp."
        if cfg.is_moe_layer(i):
            E, I = cfg.n_routed_experts, cfg.moe_intermediate_size
            t[m + "gate.weight"] = (E, D)
            if cfg.topk_method == "noaux_tc":
                t[m + "gate.e_score_correction_bias"] = (E,)
            for j in range(E):
                t[m + "experts.%d.gate_proj.weight" % j] = (I, D)
                t[m + "experts.%d.up_proj.weight" % j] = (I, D)
                t[m + "experts.%d.down_proj.weight" % j] = (D, I)
            if cfg.n_shared_experts:
                S = I * cfg.n_shared_experts
                t[m + "shared_experts.gate_proj.weight"] = (S, D)
                t[m + "shared_experts.up_proj.weight"] = (S, D)
                t[m + "shared_experts.down_proj.weight"] = (D, S)
        else:
            I = cfg.intermediate_size
            t[m + "gate_proj.weight"] = (I, D)
            t[m + "up_proj.weight"] = (I, D)
            t[m + "down_proj.weight"] = (D, I)
    return t


def is_quantized_linear(name):
    """The tensors DeepSeek's FP8 checkpoints store as F8_E4M3 (with `<name>_scale_inv`): the
    decoder layers' linear projections (q_a/q_b/q, kv_a_proj_with_mqa, kv_b, o, and the dense,
    routed and shared experts' gate/up/down). Embeddings, norms, the router gate, its bias and
    lm_head stay in BF16/F32."""
    return name.startswith("model.layers.") and name.endswith(("_proj.weight",
                                                               "_proj_with_mqa.weight"))


class LayerWeights(dict):
    """name (without the model.layers.{i}. prefix) -> array in the compute dtype."""


def load_weights(model_dir, cfg=None, dtype=np.float64):
    """Reads every tensor the forward pass needs, checking its shape; fp8 dequantized."""
    cfg = cfg or Config.load(model_dir)
    ck = safetensors_np.Checkpoint(model_dir)
    H, D = cfg.num_attention_heads, cfg.hidden_size

    def get(name, shape):
        if name not in ck:
            raise safetensors_np.SafetensorsError("%s: missing tensor %s" % (model_dir, name))
        return ck.get(name, shape, cfg.weight_block).astype(dtype)

    w = {"embed": get("model.embed_tokens.weight", (cfg.vocab_size, D)),
         "norm": get("model.norm.weight", (D,))}
    if "lm_head.weight" in ck:
        w["lm_head"] = get("lm_head.weight", (cfg.vocab_size, D))
    elif cfg.tie_word_embeddings:
        w["lm_head"] = w["embed"]
    else:
        raise safetensors_np.SafetensorsError("%s: missing tensor lm_head.weight" % model_dir)
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = "model.layers.%d." % i
        lw = LayerWeights()
        lw["input_layernorm"] = get(p + "input_layernorm.weight", (D,))
        lw["post_attention_layernorm"] = get(p + "post_attention_layernorm.weight", (D,))
        a = p + "self_attn."
        if cfg.q_lora_rank:
            lw["q_a_proj"] = get(a + "q_a_proj.weight", (cfg.q_lora_rank, D))
            lw["q_a_layernorm"] = get(a + "q_a_layernorm.weight", (cfg.q_lora_rank,))
            lw["q_b_proj"] = get(a + "q_b_proj.weight", (H * cfg.qk_head_dim, cfg.q_lora_rank))
            if cfg.attention_bias:
                lw["q_a_proj.bias"] = get(a + "q_a_proj.bias", (cfg.q_lora_rank,))
        else:
            lw["q_proj"] = get(a + "q_proj.weight", (H * cfg.qk_head_dim, D))
        lw["kv_a_proj_with_mqa"] = get(a + "kv_a_proj_with_mqa.weight",
                                       (cfg.kv_lora_rank + cfg.qk_rope_head_dim, D))
        lw["kv_a_layernorm"] = get(a + "kv_a_layernorm.weight", (cfg.kv_lora_rank,))
        lw["kv_b_proj"] = get(a + "kv_b_proj.weight",
                              (H * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank))
        lw["o_proj"] = get(a + "o_proj.weight", (D, H * cfg.v_head_dim))
        if cfg.attention_bias:
            lw["kv_a_proj_with_mqa.bias"] = get(a + "kv_a_proj_with_mqa.bias",
                                                (cfg.kv_lora_rank + cfg.qk_rope_head_dim,))
            lw["o_proj.bias"] = get(a + "o_proj.bias", (D,))
        m = p + "mlp."
        if cfg.is_moe_layer(i):
            E, I = cfg.n_routed_experts, cfg.moe_intermediate_size
            lw["gate"] = get(m + "gate.weight", (E, D))
            bias_name = m + "gate.e_score_correction_bias"
            lw["e_score_correction_bias"] = get(bias_name, (E,)) if bias_name in ck else None
            if cfg.topk_method == "noaux_tc" and lw["e_score_correction_bias"] is None:
                raise safetensors_np.SafetensorsError("%s: missing tensor %s (topk_method noaux_tc)"
                                                      % (model_dir, bias_name))
            lw["experts"] = [(get(m + "experts.%d.gate_proj.weight" % j, (I, D)),
                              get(m + "experts.%d.up_proj.weight" % j, (I, D)),
                              get(m + "experts.%d.down_proj.weight" % j, (D, I)))
                             for j in range(E)]
            if cfg.n_shared_experts:
                S = I * cfg.n_shared_experts
                lw["shared"] = (get(m + "shared_experts.gate_proj.weight", (S, D)),
                                get(m + "shared_experts.up_proj.weight", (S, D)),
                                get(m + "shared_experts.down_proj.weight", (D, S)))
            else:
                lw["shared"] = None
        else:
            I = cfg.intermediate_size
            lw["mlp"] = (get(m + "gate_proj.weight", (I, D)), get(m + "up_proj.weight", (I, D)),
                         get(m + "down_proj.weight", (D, I)))
        layers.append(lw)
    w["layers"] = layers
    return w


# ---------------------------------------------------------------------------------------------
# Multi-head latent attention
# ---------------------------------------------------------------------------------------------

class LatentCache:
    """Per layer: the normalised latent [S, kv_lora_rank] and the roped key [S, qk_rope_head_dim]
    of every position seen so far (what the absorbed form caches: 576 values/token for 671B)."""

    def __init__(self, n_layers):
        self.latent = [None] * n_layers
        self.k_pe = [None] * n_layers
        self.positions = [None] * n_layers

    def append(self, i, latent, k_pe, positions):
        if self.latent[i] is None:
            self.latent[i], self.k_pe[i], self.positions[i] = latent, k_pe, np.asarray(positions)
        else:
            self.latent[i] = np.concatenate([self.latent[i], latent])
            self.k_pe[i] = np.concatenate([self.k_pe[i], k_pe])
            self.positions[i] = np.concatenate([self.positions[i], positions])
        return self.latent[i], self.k_pe[i], self.positions[i]


def mla_inputs(x, lw, cfg, positions):
    """Queries and this step's latent/rope key. x: [T, D] (already input_layernorm'ed).
    Returns q_nope [T,H,dn], q_pe [T,H,dr] (roped), latent [T,C] (kv_a_layernorm'ed),
    k_pe [T,dr] (roped; one key shared by all heads)."""
    T = x.shape[0]
    H, dn, dr = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
    if cfg.q_lora_rank:
        qa = linear(x, lw["q_a_proj"], lw.get("q_a_proj.bias"))
        q = linear(rms_norm(qa, lw["q_a_layernorm"], cfg.rms_norm_eps), lw["q_b_proj"])
    else:
        q = linear(x, lw["q_proj"])
    q = q.reshape(T, H, dn + dr)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    kv = linear(x, lw["kv_a_proj_with_mqa"], lw.get("kv_a_proj_with_mqa.bias"))
    latent, k_pe = kv[:, :cfg.kv_lora_rank], kv[:, cfg.kv_lora_rank:]
    latent = rms_norm(latent, lw["kv_a_layernorm"], cfg.rms_norm_eps)
    cos, sin = rope_tables(cfg, positions)
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    return q_nope, apply_rope(q_pe, cos, sin), latent, apply_rope(k_pe, cos, sin)


def _causal_mask(q_pos, k_pos):
    return np.asarray(k_pos)[None, :] <= np.asarray(q_pos)[:, None]  # [Tq, Tk]


def attention_naive(q_nope, q_pe, latent, k_pe, kv_b, cfg, q_pos, k_pos, scale):
    """Per-head K/V from the latent (Hugging Face eager / model.py attn_impl='naive').
    Returns [Tq, H * v_head_dim]."""
    H, dn, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    S = latent.shape[0]
    kv = linear(latent, kv_b).reshape(S, H, dn + dv)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    k = np.concatenate([k_nope, np.broadcast_to(k_pe[:, None, :], (S, H, k_pe.shape[-1]))], -1)
    q = np.concatenate([q_nope, q_pe], axis=-1)
    scores = np.einsum("thd,shd->hts", q, k) * scale
    scores = np.where(_causal_mask(q_pos, k_pos)[None], scores, -np.inf)
    p = softmax(scores, axis=-1)
    out = np.einsum("hts,shd->thd", p, v)
    return out.reshape(out.shape[0], H * dv)


def attention_absorbed(q_nope, q_pe, latent, k_pe, kv_b, cfg, q_pos, k_pos, scale):
    """kv_b absorbed: q_nope goes into the latent space through kv_b's k part, scores are taken
    against the cached normalised latent plus the rope key, and the weighted latent goes out
    through kv_b's v part (model.py attn_impl='absorb'). Returns [Tq, H * v_head_dim]."""
    H, dn, dv, C = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    wkv_b = kv_b.reshape(H, dn + dv, C)
    w_uk, w_uv = wkv_b[:, :dn, :], wkv_b[:, dn:, :]
    q_lat = np.einsum("thd,hdc->thc", q_nope, w_uk)
    scores = (np.einsum("thc,sc->hts", q_lat, latent) +
              np.einsum("thr,sr->hts", q_pe, k_pe)) * scale
    scores = np.where(_causal_mask(q_pos, k_pos)[None], scores, -np.inf)
    p = softmax(scores, axis=-1)
    o_lat = np.einsum("hts,sc->thc", p, latent)
    out = np.einsum("thc,hdc->thd", o_lat, w_uv)
    return out.reshape(out.shape[0], H * dv)


ATTENTION = {"naive": attention_naive, "absorbed": attention_absorbed}


def mla(x, lw, cfg, positions, layer_index=0, cache=None, form="naive"):
    """Full attention block (without the residual): x [T, D] normalised input."""
    q_nope, q_pe, latent, k_pe = mla_inputs(x, lw, cfg, positions)
    if cache is not None:
        all_latent, all_k_pe, k_pos = cache.append(layer_index, latent, k_pe, positions)
    else:
        all_latent, all_k_pe, k_pos = latent, k_pe, positions
    scale = rope_params(cfg)[2]
    out = ATTENTION[form](q_nope, q_pe, all_latent, all_k_pe, lw["kv_b_proj"], cfg, positions,
                          k_pos, scale)
    return linear(out, lw["o_proj"], lw.get("o_proj.bias"))


# ---------------------------------------------------------------------------------------------
# Feed-forward: dense MLP and MoE
# ---------------------------------------------------------------------------------------------

def moe(x, lw, cfg, trace=None):
    """DeepseekV3MoE: sum_i weight_i * expert_i(x) over the routed choice, plus shared(x)."""
    scores = gate_scores(x, lw["gate"], cfg.scoring_func)
    idx, weights, det = route(scores, top_k=cfg.num_experts_per_tok, topk_method=cfg.topk_method,
                              n_group=cfg.n_group, topk_group=cfg.topk_group,
                              bias=lw["e_score_correction_bias"],
                              norm_topk_prob=cfg.norm_topk_prob,
                              routed_scaling_factor=cfg.routed_scaling_factor, details=True)
    if trace is not None:
        trace.append({"indices": idx, "weights": weights, "scores": scores, **det})
    y = np.zeros_like(x)
    for e in np.unique(idx):
        rows, slot = np.nonzero(idx == e)
        g, u, dw = lw["experts"][e]
        y[rows] += swiglu(x[rows], g, u, dw) * weights[rows, slot][:, None]
    if lw["shared"] is not None:
        y = y + swiglu(x, *lw["shared"])
    return y


def layer_forward(h, lw, cfg, positions, layer_index=0, cache=None, form="naive", trace=None):
    """One decoder layer: h + attn(norm(h)), then + mlp/moe(norm(.))."""
    h = h + mla(rms_norm(h, lw["input_layernorm"], cfg.rms_norm_eps), lw, cfg, positions,
                layer_index, cache, form)
    x = rms_norm(h, lw["post_attention_layernorm"], cfg.rms_norm_eps)
    if "mlp" in lw:
        return h + swiglu(x, *lw["mlp"])
    return h + moe(x, lw, cfg, trace)


class Model:
    def __init__(self, model_dir, dtype=np.float64):
        self.cfg = Config.load(model_dir)
        self.dtype = np.dtype(dtype)
        self.w = load_weights(model_dir, self.cfg, self.dtype)

    def _check_tokens(self, tokens):
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("tokens must be a non-empty list")
        bad = (tokens < 0) | (tokens >= self.cfg.vocab_size)
        if bad.any():
            raise ValueError("token %d is outside the vocabulary [0, %d)"
                             % (tokens[bad][0], self.cfg.vocab_size))
        return tokens

    def _run(self, tokens, positions, cache, form, trace):
        cfg = self.cfg
        h = self.w["embed"][tokens]
        for i, lw in enumerate(self.w["layers"]):
            layer_trace = None
            if trace is not None and "mlp" not in lw:
                layer_trace = trace.setdefault(i, [])
            h = layer_forward(h, lw, cfg, positions, i, cache, form, layer_trace)
        return linear(rms_norm(h, self.w["norm"], cfg.rms_norm_eps), self.w["lm_head"])

    def forward(self, tokens, form="naive", mode="prefill", trace=None):
        """Logits [T, vocab] for every position; positions 0..T-1, causal.
        mode 'prefill': all tokens at once; 'decode': one at a time through the latent cache.
        trace: optional dict, filled with {layer: [per-call gate details]}."""
        tokens = self._check_tokens(tokens)
        T = tokens.size
        if mode == "prefill":
            return self._run(tokens, np.arange(T), None, form, trace)
        if mode != "decode":
            raise ValueError("mode must be prefill or decode")
        cache = LatentCache(self.cfg.num_hidden_layers)
        rows = [self._run(tokens[t:t + 1], np.array([t]), cache, form, trace) for t in range(T)]
        return np.concatenate(rows, axis=0)


def gate_margins(trace):
    """The smallest expert-selection and group-selection margins over a forward's trace."""
    em = min((float(np.min(c["expert_margin"])) for calls in trace.values() for c in calls),
             default=math.inf)
    gm = min((float(np.min(c["group_margin"])) for calls in trace.values() for c in calls),
             default=math.inf)
    return em, gm


def parse_tokens(text):
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise ValueError("--tokens must be comma-separated integers, got %r" % text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="directory with config.json + safetensors")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True, help="raw little-endian float32 [T, vocab]")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--attention", choices=["naive", "absorbed"], default="naive")
    ap.add_argument("--mode", choices=["prefill", "decode"], default="prefill")
    args = ap.parse_args(argv)
    try:
        tokens = parse_tokens(args.tokens)
        model = Model(args.model, np.float64 if args.dtype == "float64" else np.float32)
        logits = model.forward(tokens, form=args.attention, mode=args.mode)
    except (ValueError, OSError, KeyError) as e:
        print("deepseek_v3_ref: %s" % e, file=sys.stderr)
        return 1
    logits.astype("<f4").tofile(args.out)
    print("wrote %s: %d x %d float32 logits" % (args.out, logits.shape[0], logits.shape[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
