#!/usr/bin/python3
"""Self-tests of the numpy DeepSeek-V3 reference (tests/reference): the formats it reads, the
YaRN numbers, the gate on hand-made cases, naive = absorbed attention, and whole random
checkpoints in the exact Hugging Face layout (written here by the numpy writer) run end to end
and against a second, loop-by-loop restatement of the model written in Hugging Face's style."""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepseek_v3_ref as ref  # noqa: E402
import safetensors_np as st  # noqa: E402

# The `tiny` preset of issue 3, as a Hugging Face config.json.
TINY = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 512, "hidden_size": 256, "intermediate_size": 384,
    "moe_intermediate_size": 160, "num_hidden_layers": 3, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
    "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4,
    "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "q_lora_rank": 96,
    "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 64,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "max_position_embeddings": 2560, "rms_norm_eps": 1e-6, "hidden_act": "silu",
    "attention_bias": False, "tie_word_embeddings": False, "num_nextn_predict_layers": 0,
}

# DeepSeek-V3 671B's config.json (the architecture fields).
V3_671B = dict(TINY, vocab_size=129280, hidden_size=7168, intermediate_size=18432,
               moe_intermediate_size=2048, num_hidden_layers=61, first_k_dense_replace=3,
               num_attention_heads=128, num_key_value_heads=128, n_routed_experts=256,
               n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
               q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
               v_head_dim=128, max_position_embeddings=163840,
               rope_scaling={"type": "yarn", "factor": 40,
                             "original_max_position_embeddings": 4096, "beta_fast": 32,
                             "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})


def tiny(**changes):
    d = json.loads(json.dumps(TINY))
    d.update(changes)
    return d


def random_weights(cfg_dict, seed):
    """Random weights in the HF layout, scaled so that activations stay O(1), routing varies
    across tokens and the correction bias changes some choices."""
    cfg = ref.Config(cfg_dict)
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in ref.hf_tensor_shapes(cfg).items():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith("e_score_correction_bias"):
            w = 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            w = rng.standard_normal(shape)
        else:
            w = rng.standard_normal(shape) / math.sqrt(shape[1])
        out[name] = w.astype(np.float32).astype(np.float64)
    return out


def is_fp8_target(name):
    return ref.is_quantized_linear(name)


def write_checkpoint(directory, cfg_dict, weights, dtype="f32", shards=1):
    """Writes config.json + safetensors; returns the weights as stored (what a reader must see)."""
    os.makedirs(directory, exist_ok=True)
    cfg_dict = dict(cfg_dict)
    tensors, stored = {}, {}
    for name, w in weights.items():
        if dtype == "f64":
            tensors[name] = (w, "F64")
            stored[name] = w
        elif dtype == "f32" or name.endswith("e_score_correction_bias"):
            tensors[name] = (w.astype(np.float32), "F32")
            stored[name] = w.astype(np.float32).astype(np.float64)
        elif dtype == "fp8" and is_fp8_target(name):
            codes, scale = st.block_quant(w)
            tensors[name] = (codes, "F8_E4M3")
            tensors[name + "_scale_inv"] = (scale, "F32")
            stored[name] = dequant_by_definition(codes, scale)
        else:
            bits = st.f32_to_bf16(w.astype(np.float32))
            tensors[name] = (bits, "BF16")
            stored[name] = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype == "fp8":
        cfg_dict["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                           "quant_method": "fp8", "weight_block_size": [128, 128]}
    cfg_dict["torch_dtype"] = {"f64": "float64", "f32": "float32", "bf16": "bfloat16",
                               "fp8": "bfloat16"}[dtype]
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2)
    st.save_checkpoint(tensors, directory, shards)
    return stored


# --- fp8 e4m3fn by its definition, one code at a time (independent of safetensors_np) -------

def e4m3_by_definition(code):
    s, e, m = code >> 7, (code >> 3) & 15, code & 7
    if e == 15 and m == 7:
        return float("nan")
    v = (m / 8.0) * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7)
    return -v if s else v


def dequant_by_definition(codes, scale):
    out = np.empty(codes.shape)
    for i in range(codes.shape[0]):
        for j in range(codes.shape[1]):
            out[i, j] = e4m3_by_definition(int(codes[i, j])) * float(scale[i // 128, j // 128])
    return out


# =============================================================================================
class FormatTest(unittest.TestCase):

    def test_fp8_e4m3_all_256_codes_match_the_format_definition(self):
        table = st.fp8_e4m3_table()
        for code in range(256):
            want = e4m3_by_definition(code)
            if math.isnan(want):
                self.assertTrue(math.isnan(table[code]), hex(code))
            else:
                self.assertEqual(table[code], want, hex(code))
        self.assertEqual([i for i in range(256) if math.isnan(table[i])], [0x7F, 0xFF])
        spot = {0x00: 0.0, 0x01: 2.0 ** -9, 0x07: 7 * 2.0 ** -9, 0x08: 2.0 ** -6, 0x38: 1.0,
                0x39: 1.125, 0x40: 2.0, 0x7E: 448.0, 0xFE: -448.0, 0xB8: -1.0, 0x77: 240.0}
        for code, value in spot.items():
            self.assertEqual(table[code], value, hex(code))
        self.assertTrue(math.copysign(1, table[0x80]) < 0 and table[0x80] == 0)
        self.assertFalse(np.isinf(table).any())  # e4m3fn has no infinities

    def test_fp8_encoder_rounds_to_nearest_even_and_saturates(self):
        table = st.fp8_e4m3_table()
        finite = [c for c in range(256) if not math.isnan(table[c]) and c != 0x80]
        np.testing.assert_array_equal(st.f32_to_fp8_e4m3(table[finite]), finite)
        self.assertEqual(int(st.f32_to_fp8_e4m3(1.0625)), 0x38)   # halfway 1 / 1.125 -> even
        self.assertEqual(int(st.f32_to_fp8_e4m3(1.1875)), 0x3A)   # halfway 1.125 / 1.25 -> even
        self.assertEqual(int(st.f32_to_fp8_e4m3(1000.0)), 0x7E)   # saturates at 448
        self.assertEqual(int(st.f32_to_fp8_e4m3(-1000.0)), 0xFE)
        self.assertEqual(int(st.f32_to_fp8_e4m3(2.0 ** -10)), 0x00)  # halfway 0 / 2^-9 -> even

    def test_bf16_decoding_and_rounding(self):
        bits = np.array([0x3F80, 0xC000, 0x4049, 0x7F80, 0xFF80, 0x0001, 0x8000, 0x3E80],
                        dtype=np.uint16)
        want = [1.0, -2.0, 3.140625, np.inf, -np.inf, 2.0 ** -133, -0.0, 0.25]
        np.testing.assert_array_equal(st.bf16_to_f32(bits), np.array(want, dtype=np.float32))
        self.assertTrue(np.isnan(st.bf16_to_f32(np.array([0x7FC0], np.uint16)))[0])
        x = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -20, -3.0],
                     dtype=np.float32)
        np.testing.assert_array_equal(st.f32_to_bf16(x), [0x3F80, 0x3F82, 0x3F81, 0xC040])

    def test_safetensors_round_trip_all_dtypes(self):
        rng = np.random.default_rng(1)
        a32 = rng.standard_normal((3, 5)).astype(np.float32)
        a16 = rng.standard_normal((7,)).astype(np.float16)
        bf = st.f32_to_bf16(rng.standard_normal((4, 4)).astype(np.float32))
        codes = rng.integers(0, 256, size=(200, 300)).astype(np.uint8)
        codes[codes == 0x7F] = 0x7E
        codes[codes == 0xFF] = 0xFE
        scale = rng.uniform(0.5, 2, size=(2, 3)).astype(np.float32)
        ints = np.arange(6, dtype=np.int64).reshape(2, 3)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.safetensors")
            st.save_file({"a32": (a32, "F32"), "a16": (a16, "F16"), "bf": (bf, "BF16"),
                          "w.weight": (codes, "F8_E4M3"),
                          "w.weight_scale_inv": (scale, "F32"), "ints": (ints, "I64"),
                          "scalar": (np.float32(2.5), "F32"), "empty": (np.zeros((0, 4)), "F32")},
                         path, {"format": "pt"})
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            self.assertEqual(n % 8, 0)
            self.assertEqual(header["__metadata__"], {"format": "pt"})
            self.assertEqual(header["w.weight"]["dtype"], "F8_E4M3")
            ck = st.Checkpoint(path)
            np.testing.assert_array_equal(ck.get("a32"), a32)
            np.testing.assert_array_equal(ck.get("a16"), a16.astype(np.float64))
            np.testing.assert_array_equal(ck.get("bf"), st.bf16_to_f32(bf))
            np.testing.assert_array_equal(ck.raw("bf"), bf)
            np.testing.assert_array_equal(ck.raw("w.weight"), codes)
            np.testing.assert_array_equal(ck.get("w.weight"), dequant_by_definition(codes, scale))
            np.testing.assert_array_equal(ck.raw("ints"), ints)
            self.assertEqual(ck.get("scalar").shape, ())
            self.assertEqual(float(ck.get("scalar")), 2.5)
            self.assertEqual(ck.get("empty").shape, (0, 4))
            self.assertEqual(ck.info("w.weight"), ("F8_E4M3", (200, 300)))

    def test_sharded_checkpoint_reads_like_one_file(self):
        rng = np.random.default_rng(2)
        tensors = {"t%d" % i: (rng.standard_normal((3, i + 1)).astype(np.float32), "F32")
                   for i in range(7)}
        codes = st.f32_to_fp8_e4m3(rng.standard_normal((130, 129)))
        tensors["p.weight"] = (codes, "F8_E4M3")
        tensors["p.weight_scale_inv"] = (np.full((2, 2), 0.5, np.float32), "F32")
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
            st.save_checkpoint(tensors, one, 1)
            st.save_checkpoint(tensors, many, 3)
            with open(os.path.join(many, "model.safetensors.index.json")) as f:
                index = json.load(f)
            self.assertEqual(set(index["weight_map"]), set(tensors))
            self.assertEqual(len(set(index["weight_map"].values())), 3)
            # the fp8 weight and its scale live in different shards
            self.assertNotEqual(index["weight_map"]["p.weight"],
                                index["weight_map"]["p.weight_scale_inv"])
            a, b = st.Checkpoint(one), st.Checkpoint(many)
            self.assertEqual(a.names(), b.names())
            for name in tensors:
                np.testing.assert_array_equal(a.get(name), b.get(name))
            np.testing.assert_array_equal(b.get("p.weight"), st.fp8_e4m3_to_f32(codes) * 0.5)

    def test_malformed_files_give_errors_naming_file_and_tensor(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, "good.safetensors")
            st.save_file({"w": (np.ones((2, 2), np.float32), "F32")}, good)
            with open(good, "rb") as f:
                blob = f.read()
            (n,) = struct.unpack("<Q", blob[:8])
            header = json.loads(blob[8:8 + n])

            def write(name, data):
                p = os.path.join(d, name)
                with open(p, "wb") as f:
                    f.write(data)
                return p

            def with_header(h, extra=b""):
                raw = json.dumps(h).encode()
                return struct.pack("<Q", len(raw)) + raw + blob[8 + n:] + extra

            cases = {
                "short.safetensors": (blob[:5], "too short"),
                "long_header.safetensors": (struct.pack("<Q", 10 ** 9) + blob[8:], "header length"),
                "bad_json.safetensors": (struct.pack("<Q", 3) + b"{x}" + blob[8 + n:], "JSON"),
                "range.safetensors": (with_header({"w": dict(header["w"], data_offsets=[0, 64])}),
                                      "data_offsets"),
                "dtype.safetensors": (with_header({"w": dict(header["w"], dtype="Q7")}),
                                      "unknown dtype"),
                "size.safetensors": (with_header({"w": dict(header["w"], shape=[3, 2])}), "bytes"),
                "overlap.safetensors": (with_header({"w": header["w"],
                                                     "v": dict(header["w"], data_offsets=[8, 16])}),
                                        "overlap"),
            }
            for fname, (data, words) in cases.items():
                with self.subTest(case=fname):
                    p = write(fname, data)
                    with self.assertRaises(st.SafetensorsError) as cm:
                        st.SafetensorsFile(p)
                    self.assertIn(fname, str(cm.exception))
                    self.assertIn(words, str(cm.exception))
            p = write("scale.safetensors", b"")
            st.save_file({"x.weight": (np.zeros((130, 10), np.uint8), "F8_E4M3"),
                          "x.weight_scale_inv": (np.ones((1, 1), np.float32), "F32")}, p)
            with self.assertRaises(st.SafetensorsError) as cm:
                st.Checkpoint(p).get("x.weight")
            self.assertIn("x.weight", str(cm.exception))
            with self.assertRaises(st.SafetensorsError) as cm:
                st.Checkpoint(good).get("w", shape=(2, 3))
            self.assertIn("w", str(cm.exception))


# =============================================================================================
class YarnTest(unittest.TestCase):

    def test_671b_numbers_computed_by_hand(self):
        cfg = ref.Config(V3_671B)
        # mscale = 0.1 * ln(40) + 1 = 0.1 * 3.6888794541139363 + 1
        self.assertAlmostEqual(ref.yarn_get_mscale(40, 1.0), 1.3688879454113936, places=15)
        # correction dims, d = 64, base 1e4, original 4096:
        #   beta_fast 32: 64 * ln(4096 / (64 pi)) / (2 ln 1e4) = 64 * 3.014155 / 18.420681 = 10.47
        #   beta_slow  1: 64 * ln(4096 / (2 pi))  / (2 ln 1e4) = 64 * 6.479889 / 18.420681 = 22.51
        self.assertAlmostEqual(ref.yarn_find_correction_dim(32, 64, 10000, 4096), 10.4724, 3)
        self.assertAlmostEqual(ref.yarn_find_correction_dim(1, 64, 10000, 4096), 22.5137, 3)
        self.assertEqual(ref.yarn_find_correction_range(32, 1, 64, 10000, 4096), (10, 23))
        inv_freq, cs, scale = ref.rope_params(cfg)
        # softmax scale = 192^-0.5 * 1.3688879^2 = 0.07216878 * 1.87385421 = 0.13523...
        self.assertAlmostEqual(scale, 192 ** -0.5 * 1.3688879454113936 ** 2, places=15)
        self.assertAlmostEqual(scale, 0.135234, places=6)
        self.assertEqual(cs, 1.0)  # mscale / mscale_all_dim = 1
        # below the ramp (i <= 10) the extrapolated frequency, above it (i >= 23) / 40
        i = np.arange(32)
        extra = 10000.0 ** (-2 * i / 64)
        np.testing.assert_allclose(inv_freq[:11], extra[:11], rtol=1e-15)
        np.testing.assert_allclose(inv_freq[23:], extra[23:] / 40, rtol=1e-15)
        # inside: ramp (i - 10) / 13, mask = 1 - ramp, inv = extra * (mask + (1 - mask) / 40)
        r = (16 - 10) / 13
        self.assertAlmostEqual(inv_freq[16], extra[16] * ((1 - r) + r / 40), places=18)

    def test_tiny_preset_numbers_computed_by_hand(self):
        cfg = ref.Config(TINY)
        # d = 16, original 64: dims -0.994 (floor -1 -> clamp 0) and 2.016 (ceil 3)
        self.assertAlmostEqual(ref.yarn_find_correction_dim(32, 16, 10000, 64), -0.99428, 4)
        self.assertAlmostEqual(ref.yarn_find_correction_dim(1, 16, 10000, 64), 2.01600, 4)
        self.assertEqual(ref.yarn_find_correction_range(32, 1, 16, 10000, 64), (0, 3))
        inv_freq, cs, scale = ref.rope_params(cfg)
        # ramp over 8 = [0, 1/3, 2/3, 1, ...]; inv = 1e4^(-i/8) * (1 - ramp + ramp / 40)
        want = [1.0, 10 ** -0.5 * (2 / 3 + 1 / 120), 0.1 * (1 / 3 + 2 / 120), 10 ** -1.5 / 40,
                0.01 / 40, 10 ** -2.5 / 40, 0.001 / 40, 10 ** -3.5 / 40]
        np.testing.assert_allclose(inv_freq, want, rtol=1e-14)
        self.assertAlmostEqual(inv_freq[1], 0.2134537, places=7)
        self.assertAlmostEqual(inv_freq[2], 0.035, places=15)
        self.assertEqual(cs, 1.0)
        self.assertAlmostEqual(scale, 48 ** -0.5 * 1.3688879454113936 ** 2, places=15)
        cos, sin = ref.rope_tables(cfg, [0, 1, 5])
        np.testing.assert_array_equal(cos[0], np.ones(8))
        np.testing.assert_allclose(sin[2], np.sin(5 * np.array(want)), rtol=1e-14)

    def test_mscale_variants(self):
        # no mscale_all_dim: cos/sin carry mscale(40, 1) = 1.3689, the softmax scale is plain
        cfg = ref.Config(tiny(rope_scaling={"type": "yarn", "factor": 40,
                                            "original_max_position_embeddings": 64}))
        _, cs, scale = ref.rope_params(cfg)
        self.assertAlmostEqual(cs, 1.3688879454113936, places=15)
        self.assertEqual(scale, 48 ** -0.5)
        # V2-Lite: mscale = mscale_all_dim = 0.707 -> cos/sin x 1, softmax x (1 + 0.0707 ln 40)^2
        cfg = ref.Config(tiny(rope_scaling={"type": "yarn", "factor": 40, "mscale": 0.707,
                                            "mscale_all_dim": 0.707,
                                            "original_max_position_embeddings": 4096}))
        _, cs, scale = ref.rope_params(cfg)
        self.assertEqual(cs, 1.0)
        self.assertAlmostEqual(scale, 48 ** -0.5 * (1 + 0.0707 * math.log(40)) ** 2, places=15)
        self.assertAlmostEqual(1 + 0.0707 * math.log(40), 1.260804, places=6)
        # factor <= 1: mscale 1
        self.assertEqual(ref.yarn_get_mscale(1.0, 5.0), 1.0)
        # no rope_scaling: plain RoPE
        cfg = ref.Config(tiny(rope_scaling=None))
        inv_freq, cs, scale = ref.rope_params(cfg)
        np.testing.assert_allclose(inv_freq, 10000.0 ** (-np.arange(0, 16, 2) / 16), rtol=1e-15)
        self.assertEqual((cs, scale), (1.0, 48 ** -0.5))
        # rope_type spelling and unknown types
        hf_new = dict(TINY["rope_scaling"], rope_type="yarn")
        del hf_new["type"]
        self.assertEqual(ref.rope_params(ref.Config(tiny(rope_scaling=hf_new)))[2],
                         ref.rope_params(ref.Config(TINY))[2])
        with self.assertRaises(ref.ConfigError):
            ref.rope_params(ref.Config(tiny(rope_scaling={"type": "dynamic", "factor": 2})))

    def test_ramp_avoids_division_by_zero(self):
        np.testing.assert_allclose(ref.yarn_linear_ramp_mask(2, 2, 5), [0, 0, 0, 1, 1])
        np.testing.assert_allclose(ref.yarn_linear_ramp_mask(1, 3, 5), [0, 0, 0.5, 1, 1])

    def test_interleaved_rope_is_model_py_complex_rotation_and_hf_rotate_half(self):
        cfg = ref.Config(tiny(rope_scaling=None))
        rng = np.random.default_rng(3)
        x = rng.standard_normal((5, 3, 16))
        pos = np.array([0, 1, 2, 7, 30])
        cos, sin = ref.rope_tables(cfg, pos)
        got = ref.apply_rope(x, cos, sin)
        # model.py: view_as_complex(pairs) * polar(1, pos * freq)
        inv_freq = ref.rope_params(cfg)[0]
        z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.outer(pos, inv_freq))[:, None, :]
        want = np.stack([z.real, z.imag], axis=-1).reshape(x.shape)
        np.testing.assert_allclose(got, want, atol=1e-14)
        # Hugging Face: de-interleave (evens then odds), x*cos + rotate_half(x)*sin with
        # cos = cat(freqs, freqs); equals ours with the dims in de-interleaved order
        perm = np.concatenate([np.arange(0, 16, 2), np.arange(1, 16, 2)])
        xp = x[..., perm]
        c2 = np.concatenate([cos, cos], -1)[:, None, :]
        s2 = np.concatenate([sin, sin], -1)[:, None, :]
        rot = np.concatenate([-xp[..., 8:], xp[..., :8]], -1)
        np.testing.assert_allclose(xp * c2 + rot * s2, got[..., perm], atol=1e-14)
        # q(m).k(n) depends only on m - n
        q, k = rng.standard_normal(16), rng.standard_normal(16)
        c, s = ref.rope_tables(cfg, [3, 10, 13, 20])
        r = lambda v, i: ref.apply_rope(v[None], c[i:i + 1], s[i:i + 1])[0]  # noqa: E731
        self.assertAlmostEqual(r(q, 1) @ r(k, 0), r(q, 3) @ r(k, 2), places=12)


# =============================================================================================
class GateTest(unittest.TestCase):
    # 8 experts in 4 groups of 2: g0 = {0,1}, g1 = {2,3}, g2 = {4,5}, g3 = {6,7}
    S = np.array([0.9, 0.1, 0.45, 0.5, 0.8, 0.0, 0.3, 0.3])

    def route(self, scores, **kw):
        args = dict(top_k=2, topk_method="noaux_tc", n_group=4, topk_group=2, bias=None,
                    norm_topk_prob=True, routed_scaling_factor=1.0)
        args.update(kw)
        idx, w = ref.route(np.asarray(scores, dtype=np.float64), **args)
        return list(idx), list(w)

    def test_group_limiting_by_sum_of_top2_and_by_max(self):
        # group scores, top-2 sums: g0 1.0, g1 0.95, g2 0.8, g3 0.6 -> keep g0, g1
        idx, w = self.route(self.S)
        self.assertEqual(idx, [0, 3])
        np.testing.assert_allclose(w, [0.9 / 1.4, 0.5 / 1.4], rtol=1e-15)
        # without groups the two best are 0 and 4
        self.assertEqual(self.route(self.S, n_group=1, topk_group=1)[0], [0, 4])
        self.assertEqual(self.route(self.S, topk_method="greedy")[0], [0, 4])
        # V2's group_limited_greedy scores a group by its max: g0 0.9, g2 0.8 -> keep g0, g2
        self.assertEqual(self.route(self.S, topk_method="group_limited_greedy")[0], [0, 4])
        # keeping 3 groups lets 4 back in
        self.assertEqual(self.route(self.S, topk_group=3)[0], [0, 4])

    def test_bias_changes_selection_but_not_weights(self):
        s = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01])
        self.assertEqual(self.route(s, n_group=1)[0], [0, 1])
        bias = np.zeros(8)
        bias[5] = 0.6  # expert 5 selects at 0.7 > 0.6
        idx, w = self.route(s, n_group=1, bias=bias, norm_topk_prob=False)
        self.assertEqual(idx, [5, 0])
        self.assertEqual(w, [0.1, 0.6])  # unbiased scores
        idx, w = self.route(s, n_group=1, bias=bias, routed_scaling_factor=2.5)
        np.testing.assert_allclose(w, [2.5 * 0.1 / 0.7, 2.5 * 0.6 / 0.7], rtol=1e-15)
        # bias also decides which groups survive: lift g3 above everything
        bias = np.array([0, 0, 0, 0, 0, 0, 1.0, 1.0])
        idx, w = self.route(self.S, bias=bias, norm_topk_prob=False)
        self.assertEqual(sorted(idx), [6, 7])
        self.assertEqual(w, [0.3, 0.3])

    def test_normalisation_and_scaling(self):
        idx, w = self.route(self.S, norm_topk_prob=False, routed_scaling_factor=2.5)
        np.testing.assert_allclose(w, [2.25, 1.25], rtol=1e-15)   # raw scores x 2.5
        idx, w = self.route(self.S, routed_scaling_factor=2.5)
        self.assertAlmostEqual(sum(w), 2.5, places=14)
        np.testing.assert_allclose(w, [2.5 * 0.9 / 1.4, 2.5 * 0.5 / 1.4], rtol=1e-15)
        # top_k = 1: no normalisation (Hugging Face: top_k > 1 and norm_topk_prob)
        idx, w = self.route(self.S, top_k=1, routed_scaling_factor=2.5)
        self.assertEqual(idx, [0])
        np.testing.assert_allclose(w, [2.25], rtol=1e-15)

    def test_dropped_groups_are_unselectable_even_when_kept_scores_are_negative(self):
        # all selection scores negative after the bias; groups g0, g1 win (sums -1.05, -1.1)
        s = np.array([0.5, 0.45, 0.4, 0.5, 0.1, 0.1, 0.2, 0.05])
        bias = np.full(8, -1.0)
        idx, w = self.route(s, bias=bias, top_k=4)
        self.assertEqual(sorted(idx), [0, 1, 2, 3])
        np.testing.assert_allclose(sorted(w), sorted(np.array([0.5, 0.45, 0.4, 0.5]) / 1.85),
                                   rtol=1e-15)
        # with Hugging Face's 0.0 mask instead, experts 4..7 (masked to 0.0 > -0.5) would win
        masked0 = np.where(np.repeat([False, False, True, True], 2), 0.0, s + bias)
        self.assertTrue(set(np.argsort(-masked0, kind="stable")[:4]) & {4, 5, 6, 7})
        idx, _ = self.route(s, bias=bias, top_k=3)
        self.assertTrue(set(idx) <= {0, 1, 2, 3})
        idx, _, det = ref.route(s, top_k=4, n_group=4, topk_group=2, bias=bias, details=True)
        self.assertEqual(sorted(det["kept_groups"][0]), [0, 1])

    def test_softmax_scoring_and_batched_rows(self):
        logits = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.5]])
        scores = ref.gate_scores(np.eye(4)[:2] @ np.eye(4), np.eye(4), "softmax")
        np.testing.assert_allclose(scores.sum(-1), 1.0)
        p = ref.gate_scores(logits, np.eye(4), "softmax")
        np.testing.assert_allclose(p[0], np.exp(logits[0]) / np.exp(logits[0]).sum())
        sg = ref.gate_scores(logits, np.eye(4), "sigmoid")
        np.testing.assert_allclose(sg, 1 / (1 + np.exp(-logits)), rtol=1e-15)
        idx, w = ref.route(p, top_k=2, topk_method="gready", norm_topk_prob=False,
                           routed_scaling_factor=16.0)
        np.testing.assert_array_equal(idx, [[0, 1], [2, 3]])
        np.testing.assert_allclose(w, np.take_along_axis(p, idx, 1) * 16.0)

    def test_ties_go_to_the_lower_index(self):
        idx, _ = self.route(np.full(8, 0.5), n_group=1, top_k=3)
        self.assertEqual(idx, [0, 1, 2])


# =============================================================================================
class AttentionTest(unittest.TestCase):

    def layer(self, cfg_dict, seed=5):
        w = random_weights(cfg_dict, seed)
        cfg = ref.Config(cfg_dict)
        lw = {}
        p = "model.layers.0.self_attn."
        for k in ("q_a_proj", "q_a_layernorm", "q_b_proj", "q_proj", "kv_a_proj_with_mqa",
                  "kv_a_layernorm", "kv_b_proj", "o_proj"):
            if p + k + ".weight" in w:
                lw[k] = w[p + k + ".weight"]
        return cfg, lw

    def test_naive_equals_absorbed(self):
        rng = np.random.default_rng(6)
        for q_lora in (96, None):
            cfg, lw = self.layer(tiny(q_lora_rank=q_lora))
            x = rng.standard_normal((9, 256))
            pos = np.arange(9)
            a = ref.mla(x, lw, cfg, pos, form="naive")
            b = ref.mla(x, lw, cfg, pos, form="absorbed")
            self.assertLess(np.abs(a - b).max(), 1e-12 * np.abs(a).max())
            # one token at a time through the latent cache gives the same rows
            for form in ("naive", "absorbed"):
                cache = ref.LatentCache(1)
                rows = [ref.mla(x[t:t + 1], lw, cfg, pos[t:t + 1], 0, cache, form)
                        for t in range(9)]
                self.assertLess(np.abs(np.concatenate(rows) - a).max(), 1e-12 * np.abs(a).max())

    def test_attention_is_causal(self):
        cfg, lw = self.layer(TINY)
        rng = np.random.default_rng(7)
        x = rng.standard_normal((6, 256))
        y = x.copy()
        y[4:] = rng.standard_normal((2, 256))
        a = ref.mla(x, lw, cfg, np.arange(6))
        b = ref.mla(y, lw, cfg, np.arange(6))
        np.testing.assert_array_equal(a[:4], b[:4])
        self.assertGreater(np.abs(a[4:] - b[4:]).max(), 1e-3)

    def test_single_token_attends_to_itself_only(self):
        # softmax over one key is 1: output = o_proj(v of the token itself), whatever RoPE does
        cfg, lw = self.layer(TINY)
        x = np.random.default_rng(8).standard_normal((1, 256))
        latent = ref.linear(x, lw["kv_a_proj_with_mqa"])[:, :64]
        latent = latent / np.sqrt(np.mean(latent ** 2) + 1e-6) * lw["kv_a_layernorm"]
        v = (latent @ lw["kv_b_proj"].T).reshape(4, 64)[:, 32:].reshape(1, 128)
        for pos in (0, 17):
            np.testing.assert_allclose(ref.mla(x, lw, cfg, np.array([pos])), v @ lw["o_proj"].T,
                                       rtol=1e-12, atol=1e-12)


# =============================================================================================
# A second statement of the whole model, loop by loop in Hugging Face's conventions
# (de-interleaved RoPE with rotate_half, per-head per-query attention, per-token gate written
# out), used to cross-check the vectorised reference on small prompts.

def slow_forward(w, c, tokens):
    H, dn, dr, dv, C = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"],
                        c["v_head_dim"], c["kv_lora_rank"])
    eps = c["rms_norm_eps"]
    rs = c["rope_scaling"]

    def norm(v, g):
        return v / math.sqrt(float(np.dot(v, v)) / v.size + eps) * g

    def sig(z):
        return 1 / (1 + math.exp(-z))

    def mlp(v, g, u, d):
        a = g @ v
        return d @ (np.array([t * sig(t) for t in a]) * (u @ v))

    # YaRN, spelt out
    def mscale(s, m):
        return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

    def corr(r):
        return dr * math.log(rs["original_max_position_embeddings"] / (r * 2 * math.pi)) / (
            2 * math.log(c["rope_theta"]))

    lo = max(math.floor(corr(rs["beta_fast"])), 0)
    hi = min(math.ceil(corr(rs["beta_slow"])), dr - 1)
    inv = []
    for i in range(dr // 2):
        extra = 1.0 / c["rope_theta"] ** (2 * i / dr)
        ramp = min(max((i - lo) / ((hi - lo) if hi != lo else 0.001), 0.0), 1.0)
        inv.append(extra * (1 - ramp) + extra / rs["factor"] * ramp)
    cs_mul = mscale(rs["factor"], rs["mscale"]) / mscale(rs["factor"], rs["mscale_all_dim"])
    scale = (dn + dr) ** -0.5 * mscale(rs["factor"], rs["mscale_all_dim"]) ** 2

    def rope_hf(v, pos):
        v = np.concatenate([v[0::2], v[1::2]])  # HF's view(d/2, 2).transpose
        ang = np.array(inv + inv) * pos
        rot = np.concatenate([-v[dr // 2:], v[:dr // 2]])
        return v * np.cos(ang) * cs_mul + rot * np.sin(ang) * cs_mul

    T = len(tokens)
    h = [w["model.embed_tokens.weight"][t].copy() for t in tokens]
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % L
        a = p + "self_attn."
        qs, ks, vs = [], [], []
        for t in range(T):
            x = norm(h[t], w[p + "input_layernorm.weight"])
            if c["q_lora_rank"]:
                q = w[a + "q_b_proj.weight"] @ norm(w[a + "q_a_proj.weight"] @ x,
                                                    w[a + "q_a_layernorm.weight"])
            else:
                q = w[a + "q_proj.weight"] @ x
            kv = w[a + "kv_a_proj_with_mqa.weight"] @ x
            lat = norm(kv[:C], w[a + "kv_a_layernorm.weight"])
            kpe = rope_hf(kv[C:], t)
            kvb = w[a + "kv_b_proj.weight"] @ lat
            qh, kh, vh = [], [], []
            for head in range(H):
                qq = q[head * (dn + dr):(head + 1) * (dn + dr)]
                qh.append(np.concatenate([qq[:dn], rope_hf(qq[dn:], t)]))
                kk = kvb[head * (dn + dv):(head + 1) * (dn + dv)]
                kh.append(np.concatenate([kk[:dn], kpe]))
                vh.append(kk[dn:])
            qs.append(qh)
            ks.append(kh)
            vs.append(vh)
        new_h = []
        for t in range(T):
            out = []
            for head in range(H):
                sc = [float(qs[t][head] @ ks[s][head]) * scale for s in range(t + 1)]
                m = max(sc)
                e = [math.exp(z - m) for z in sc]
                out.append(sum(e[s] / sum(e) * vs[s][head] for s in range(t + 1)))
            new_h.append(h[t] + w[a + "o_proj.weight"] @ np.concatenate(out))
        h = new_h
        m = p + "mlp."
        for t in range(T):
            x = norm(h[t], w[p + "post_attention_layernorm.weight"])
            if L < c["first_k_dense_replace"]:
                h[t] = h[t] + mlp(x, w[m + "gate_proj.weight"], w[m + "up_proj.weight"],
                                  w[m + "down_proj.weight"])
                continue
            E, G = c["n_routed_experts"], c["n_group"]
            score = [sig(z) for z in w[m + "gate.weight"] @ x]
            choose = [score[e] + w[m + "gate.e_score_correction_bias"][e] for e in range(E)]
            per = E // G
            gsc = [sum(sorted(choose[g * per:(g + 1) * per])[-2:]) for g in range(G)]
            kept = sorted(range(G), key=lambda g: (-gsc[g], g))[:c["topk_group"]]
            allowed = [e for e in range(E) if e // per in kept]
            chosen = sorted(allowed, key=lambda e: (-choose[e], e))[:c["num_experts_per_tok"]]
            total = sum(score[e] for e in chosen)
            y = mlp(x, w[m + "shared_experts.gate_proj.weight"], w[m + "shared_experts.up_proj.weight"],
                    w[m + "shared_experts.down_proj.weight"])
            for e in chosen:
                wt = score[e] / total * c["routed_scaling_factor"]
                y = y + wt * mlp(x, w[m + "experts.%d.gate_proj.weight" % e],
                                 w[m + "experts.%d.up_proj.weight" % e],
                                 w[m + "experts.%d.down_proj.weight" % e])
            h[t] = h[t] + y
    return np.array([w["lm_head.weight"] @ norm(v, w["model.norm.weight"]) for v in h])


class EndToEndTest(unittest.TestCase):
    """Random tiny checkpoints in the exact HF layout, written by the numpy writer."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR"))
        cls.dirs, cls.stored = {}, {}
        cls.cfgs = {"q_lora": tiny(), "no_q_lora": tiny(q_lora_rank=None)}
        for variant, cfg in cls.cfgs.items():
            w = random_weights(cfg, seed=11 if variant == "q_lora" else 12)
            for dtype, shards in (("f32", 1), ("bf16", 3), ("fp8", 2)):
                d = os.path.join(cls.tmp.name, "%s-%s" % (variant, dtype))
                cls.stored[variant, dtype] = write_checkpoint(d, cfg, w, dtype, shards)
                cls.dirs[variant, dtype] = d
        cls.models = {}
        rng = np.random.default_rng(13)
        cls.prompts = {n: rng.integers(0, 512, size=n).tolist() for n in (1, 7, 33, 100)}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def model(self, variant, dtype):
        key = (variant, dtype)
        if key not in self.models:
            self.models[key] = ref.Model(self.dirs[key])
        return self.models[key]

    def assertClose(self, a, b, rel):
        bound = rel * np.abs(b).max()
        self.assertLess(np.abs(a - b).max(), bound, "max diff %g > %g" % (np.abs(a - b).max(), bound))

    def test_layout_is_exactly_hugging_face(self):
        for (variant, dtype), d in self.dirs.items():
            with self.subTest(variant=variant, dtype=dtype):
                ck = st.Checkpoint(d)
                cfg = ref.Config.load(d)
                want = ref.hf_tensor_shapes(cfg)
                names = set(ck.names())
                scales = {n for n in names if n.endswith("_scale_inv")}
                self.assertEqual(names - scales, set(want))
                for n, shape in want.items():
                    self.assertEqual(ck.info(n)[1], shape, n)
                if dtype == "fp8":
                    self.assertEqual(scales, {n + "_scale_inv" for n in want if is_fp8_target(n)})
                    self.assertEqual(len(scales), 3 * 5 + 2 * 3 * 17 + 3 - (variant != "q_lora") * 3)
                    self.assertEqual(
                        ck.info("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"),
                        ("F32", (1, 2)))  # [80, 256]
                    self.assertEqual(ck.info("model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"),
                                     ("F32", (2, 2)))  # [256, 160]: a partial 32-column block
                    if variant == "q_lora":  # [96, 256]: one partial 96-row block
                        self.assertEqual(
                            ck.info("model.layers.1.self_attn.q_a_proj.weight_scale_inv"),
                            ("F32", (1, 2)))

    def test_reader_sees_exactly_the_stored_values(self):
        for (variant, dtype), d in self.dirs.items():
            ck = st.Checkpoint(d)
            for name in ("model.layers.1.mlp.experts.3.down_proj.weight", "model.embed_tokens.weight",
                         "model.layers.0.self_attn.kv_b_proj.weight",
                         "model.layers.2.mlp.gate.e_score_correction_bias"):
                np.testing.assert_array_equal(ck.get(name), self.stored[variant, dtype][name],
                                              "%s %s %s" % (variant, dtype, name))

    def test_agrees_with_the_loop_by_loop_restatement(self):
        for variant in ("q_lora", "no_q_lora"):
            with self.subTest(variant=variant):
                tokens = self.prompts[7]
                want = slow_forward(self.stored[variant, "f32"], self.cfgs[variant], tokens)
                got = self.model(variant, "f32").forward(tokens)
                self.assertClose(got, want, 1e-11)

    def test_naive_absorbed_prefill_decode_agree(self):
        for variant in ("q_lora", "no_q_lora"):
            m = self.model(variant, "f32")
            for n in (1, 33):
                base = m.forward(self.prompts[n])
                for form in ("naive", "absorbed"):
                    for mode in ("prefill", "decode"):
                        with self.subTest(variant=variant, n=n, form=form, mode=mode):
                            self.assertClose(m.forward(self.prompts[n], form, mode), base, 1e-12)

    def test_bf16_and_fp8_equal_f64_holding_the_same_values(self):
        tokens = self.prompts[33]
        for variant in ("q_lora", "no_q_lora"):
            for dtype in ("bf16", "fp8"):
                with self.subTest(variant=variant, dtype=dtype):
                    d = os.path.join(self.tmp.name, "%s-%s-as-f32" % (variant, dtype))
                    write_checkpoint(d, self.cfgs[variant], self.stored[variant, dtype], "f64")
                    self.assertClose(self.model(variant, dtype).forward(tokens),
                                     ref.Model(d).forward(tokens), 1e-12)
                    # and quantization really changed the model
                    diff = self.model(variant, dtype).forward(tokens) - \
                        self.model(variant, "f32").forward(tokens)
                    self.assertGreater(np.abs(diff).max(), 1e-4)

    def test_float32_compute_stays_within_the_golden_tolerance(self):
        for variant in ("q_lora", "no_q_lora"):
            for n in (7, 100):
                with self.subTest(variant=variant, n=n):
                    d = self.dirs[variant, "fp8"]
                    r64 = self.model(variant, "fp8").forward(self.prompts[n])
                    r32 = ref.Model(d, np.float32).forward(self.prompts[n])
                    self.assertEqual(r32.dtype, np.float32)
                    self.assertClose(r32.astype(np.float64), r64, 1e-4)
                    np.testing.assert_array_equal(r32.argmax(-1), r64.argmax(-1))

    def test_routing_is_not_degenerate(self):
        m = self.model("q_lora", "f32")
        trace = {}
        m.forward(self.prompts[100], trace=trace)
        self.assertEqual(sorted(trace), [1, 2])
        for layer, (call,) in trace.items():
            sets = {tuple(sorted(r)) for r in call["indices"]}
            self.assertGreater(len(sets), 20, "layer %d: expert choice barely varies" % layer)
            unbiased, _ = ref.route(call["scores"], top_k=4, n_group=4, topk_group=2)
            changed = (np.sort(unbiased, 1) != np.sort(call["indices"], 1)).any(1).sum()
            self.assertGreater(changed, 0, "layer %d: the bias never matters" % layer)
        em, gm = ref.gate_margins(trace)
        self.assertGreater(min(em, gm), 0)

    def test_command_line(self):
        d = self.dirs["no_q_lora", "bf16"]
        tokens = self.prompts[7]
        with tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR")) as t:
            out = os.path.join(t, "logits.bin")
            r = subprocess.run([sys.executable, os.path.join(HERE, "deepseek_v3_ref.py"),
                                "--model", d, "--tokens", ",".join(map(str, tokens)),
                                "--out", out, "--attention", "absorbed", "--mode", "decode"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(os.path.getsize(out), 7 * 512 * 4)
            got = np.fromfile(out, dtype="<f4").reshape(7, 512)
            np.testing.assert_array_equal(
                got, self.model("no_q_lora", "bf16").forward(tokens).astype(np.float32))
            r = subprocess.run([sys.executable, os.path.join(HERE, "deepseek_v3_ref.py"),
                                "--model", d, "--tokens", "1,512", "--out", out],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 1)
            self.assertIn("512", r.stderr)

    def test_config_errors_name_the_field(self):
        for field in ("hidden_size", "kv_lora_rank", "vocab_size"):
            bad = tiny()
            del bad[field]
            with self.assertRaises(ref.ConfigError) as cm:
                ref.Config(bad)
            self.assertIn(field, str(cm.exception))
        with self.assertRaises(ref.ConfigError) as cm:
            ref.Config(tiny(scoring_func="relu"))
        self.assertIn("scoring_func", str(cm.exception))
        # MoE layer placement follows first_k_dense_replace and moe_layer_freq
        cfg = ref.Config(tiny(num_hidden_layers=6, first_k_dense_replace=1, moe_layer_freq=2))
        self.assertEqual([cfg.is_moe_layer(i) for i in range(6)],
                         [False, False, True, False, True, False])

    def test_missing_or_misshapen_tensor_is_named(self):
        d = os.path.join(self.tmp.name, "broken")
        w = dict(self.stored["q_lora", "f32"])
        del w["model.layers.2.mlp.experts.15.up_proj.weight"]
        write_checkpoint(d, self.cfgs["q_lora"], w, "f32")
        with self.assertRaises(st.SafetensorsError) as cm:
            ref.Model(d)
        self.assertIn("model.layers.2.mlp.experts.15.up_proj.weight", str(cm.exception))
        w = dict(self.stored["q_lora", "f32"])
        w["model.layers.0.self_attn.kv_b_proj.weight"] = np.zeros((256, 63))
        write_checkpoint(d, self.cfgs["q_lora"], w, "f32")
        with self.assertRaises(st.SafetensorsError) as cm:
            ref.Model(d)
        self.assertIn("kv_b_proj", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
