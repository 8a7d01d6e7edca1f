#!/usr/bin/python3
"""Golden test: the C++ engine's logits against the independent numpy reference.

For f32, bf16 and fp8 checkpoints made by `epinfer make-model --preset tiny`, with and without
q LoRA, and prompts of 1, 7, 33 and 100 tokens, `epinfer forward` in prefill and in decode mode
must match the float64 reference at every position: max |diff| <= 1e-4 x max |reference logit|
and the same argmax per position.

The contract this test relies on (issue 3):
  epinfer make-model --preset tiny --dtype f32|bf16|fp8 --seed N --out DIR [--shards K] [--no_q_lora]
      writes config.json + safetensors in the Hugging Face DeepSeek-V3 layout (index when sharded)
  epinfer forward --model DIR --tokens 3,17,42 --out FILE [--mode prefill|decode]
      writes raw little-endian float32 logits [num_tokens, vocab]
"""
import json
import math
import os
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import deepseek_v3_ref as ref  # noqa: E402
import procs  # noqa: E402
import safetensors_np as st  # noqa: E402

REL_TOL = 1e-4
LENGTHS = (1, 7, 33, 100)
MODES = ("prefill", "decode")
# dtype -> (seed, shards); shards None = no --shards flag (one model.safetensors)
DTYPES = {"f32": (101, None), "bf16": (202, 2), "fp8": (303, 3)}
VARIANTS = {"q_lora": [], "no_q_lora": ["--no_q_lora"]}

# The `tiny` preset of issue 3, field by field as config.json must carry it.
TINY = {
    "hidden_size": 256, "num_hidden_layers": 3, "first_k_dense_replace": 1,
    "intermediate_size": 384, "n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4,
    "topk_group": 2, "n_shared_experts": 1, "moe_intermediate_size": 160,
    "num_attention_heads": 4, "q_lora_rank": 96, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16, "v_head_dim": 32, "vocab_size": 512, "rope_theta": 10000,
    "max_position_embeddings": 2560, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "rms_norm_eps": 1e-6,
}
TINY_ROPE_SCALING = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 64,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}


def epinfer(*args, timeout_s=300):
    return procs.run([procs.runfile("cli/epinfer")] + [str(a) for a in args], timeout_s=timeout_s)


class GoldenTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR"))
        cls.dirs, cls.models, cls.reference = {}, {}, {}
        rng = np.random.default_rng(20250214)
        cls.prompts = {n: rng.integers(0, TINY["vocab_size"], size=n).tolist() for n in LENGTHS}
        for dtype, (seed, shards) in DTYPES.items():
            for variant, extra in VARIANTS.items():
                d = os.path.join(cls.tmp.name, "%s-%s" % (dtype, variant))
                argv = ["make-model", "--preset", "tiny", "--dtype", dtype, "--seed", seed,
                        "--out", d] + (["--shards", shards] if shards else []) + extra
                code, out, err = epinfer(*argv)
                if code != 0:
                    raise AssertionError("epinfer %s exited %d:\n%s%s"
                                         % (" ".join(map(str, argv)), code, out, err))
                cls.dirs[dtype, variant] = d

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def model(self, dtype, variant):
        key = (dtype, variant)
        if key not in self.models:
            self.models[key] = ref.Model(self.dirs[key])
        return self.models[key]

    def reference_logits(self, dtype, variant, n):
        """(float64 logits, smallest expert margin, smallest group margin) for prompt n."""
        key = (dtype, variant, n)
        if key not in self.reference:
            trace = {}
            logits = self.model(dtype, variant).forward(self.prompts[n], trace=trace)
            self.reference[key] = (logits,) + ref.gate_margins(trace)
        return self.reference[key]

    # --- the checkpoint make-model writes -------------------------------------------------

    def test_make_model_writes_the_tiny_preset(self):
        for (dtype, variant), d in self.dirs.items():
            with self.subTest(dtype=dtype, variant=variant):
                with open(os.path.join(d, "config.json")) as f:
                    config = json.load(f)
                for field, want in TINY.items():
                    if field == "q_lora_rank" and variant == "no_q_lora":
                        want = None
                    self.assertIn(field, config)
                    self.assertEqual(config[field], want, field)
                rope_scaling = config.get("rope_scaling") or {}
                for field, want in TINY_ROPE_SCALING.items():
                    self.assertEqual(rope_scaling.get(field), want, "rope_scaling." + field)
                self.assertIn(config.get("hidden_act", "silu"), ("silu",))

    def test_make_model_writes_the_hugging_face_layout(self):
        for (dtype, variant), d in self.dirs.items():
            with self.subTest(dtype=dtype, variant=variant):
                seed, shards = DTYPES[dtype]
                ck = st.Checkpoint(d)
                cfg = ref.Config.load(d)
                want = ref.hf_tensor_shapes(cfg)
                names = set(ck.names())
                scales = {n for n in names if n.endswith("_scale_inv")}
                self.assertEqual(sorted(names - scales), sorted(want))
                for name, shape in want.items():
                    self.assertEqual(ck.info(name)[1], shape, name)
                index = os.path.join(d, "model.safetensors.index.json")
                if shards:
                    with open(index) as f:
                        weight_map = json.load(f)["weight_map"]
                    self.assertEqual(set(weight_map), names)
                    self.assertEqual(len(set(weight_map.values())), shards)
                else:
                    self.assertTrue(os.path.exists(os.path.join(d, "model.safetensors")))
                kinds = {n: ck.info(n)[0] for n in names}
                if dtype == "f32":
                    self.assertEqual(set(kinds.values()), {"F32"})
                elif dtype == "bf16":
                    for n, k in kinds.items():
                        allowed = ("BF16", "F32") if n.endswith("e_score_correction_bias") else ("BF16",)
                        self.assertIn(k, allowed, n)
                else:
                    fp8 = {n for n, k in kinds.items() if k == "F8_E4M3"}
                    self.assertTrue(fp8, "no F8_E4M3 tensor in an fp8 checkpoint")
                    # as in DeepSeek's FP8 release: the layers' linear weights, each with a
                    # float32 scale_inv of [ceil(out/128), ceil(in/128)]
                    self.assertEqual(fp8, {n for n in want if ref.is_quantized_linear(n)})
                    self.assertEqual(scales, {n + "_scale_inv" for n in fp8})
                    for n in fp8:
                        rows, cols = want[n]
                        self.assertEqual(ck.info(n + "_scale_inv"),
                                         ("F32", (math.ceil(rows / 128), math.ceil(cols / 128))), n)
                    qc = cfg.quantization_config or {}
                    self.assertEqual(qc.get("weight_block_size"), [128, 128])
                    self.assertEqual(qc.get("fmt"), "e4m3")

    def test_checkpoints_exercise_routing(self):
        """Expert choice varies across tokens and the correction bias changes some choices."""
        for (dtype, variant) in self.dirs:
            with self.subTest(dtype=dtype, variant=variant):
                trace = {}
                self.model(dtype, variant).forward(self.prompts[100], trace=trace)
                for layer, calls in trace.items():
                    call = calls[0]
                    sets = {tuple(sorted(r)) for r in call["indices"]}
                    self.assertGreater(len(sets), 10, "layer %d: expert choice barely varies" % layer)
                    unbiased, _ = ref.route(call["scores"], top_k=4, n_group=4, topk_group=2)
                    changed = (np.sort(unbiased, 1) != np.sort(call["indices"], 1)).any(1).sum()
                    self.assertGreater(changed, 0, "layer %d: the bias never matters" % layer)

    def test_reference_forms_agree_on_these_checkpoints(self):
        for (dtype, variant) in self.dirs:
            with self.subTest(dtype=dtype, variant=variant):
                base = self.reference_logits(dtype, variant, 33)[0]
                absorbed = self.model(dtype, variant).forward(self.prompts[33], form="absorbed")
                self.assertLess(np.abs(absorbed - base).max(), 1e-10 * np.abs(base).max())

    # --- the engine against the reference -------------------------------------------------

    def test_forward_matches_the_reference(self):
        worst = []
        for (dtype, variant), d in self.dirs.items():
            for n in LENGTHS:
                want, em, gm = self.reference_logits(dtype, variant, n)
                for mode in MODES:
                    with self.subTest(dtype=dtype, variant=variant, tokens=n, mode=mode):
                        out = os.path.join(self.tmp.name, "logits-%s-%s-%d-%s.bin"
                                           % (dtype, variant, n, mode))
                        argv = ["forward", "--model", d, "--tokens",
                                ",".join(map(str, self.prompts[n])), "--out", out, "--mode", mode]
                        code, stdout, stderr = epinfer(*argv)
                        self.assertEqual(code, 0, "epinfer forward exited %d:\n%s%s"
                                         % (code, stdout, stderr))
                        size = os.path.getsize(out)
                        self.assertEqual(size, n * TINY["vocab_size"] * 4,
                                         "%s: %d bytes, want %d x %d float32"
                                         % (out, size, n, TINY["vocab_size"]))
                        got = np.fromfile(out, dtype="<f4").reshape(n, TINY["vocab_size"])
                        self.assertTrue(np.isfinite(got).all(), "non-finite logits")
                        diff = np.abs(got.astype(np.float64) - want)
                        bound = REL_TOL * np.abs(want).max()
                        pos, col = np.unravel_index(np.argmax(diff), diff.shape)
                        worst.append((diff.max() / np.abs(want).max(), dtype, variant, n, mode))
                        near_tie = ("" if min(em, gm) > 1e-5 else
                                    " (the reference's routing has a near-tie: expert margin %g, "
                                    "group margin %g)" % (em, gm))
                        self.assertLessEqual(
                            diff.max(), bound,
                            "max |diff| %g > %g at position %d, vocab %d (engine %g, reference %g)%s"
                            % (diff.max(), bound, pos, col, got[pos, col], want[pos, col],
                               near_tie))
                        bad = np.nonzero(got.argmax(-1) != want.argmax(-1))[0]
                        self.assertEqual(len(bad), 0, "argmax differs at positions %s%s"
                                         % (bad.tolist()[:10], near_tie))
        worst.sort(reverse=True)
        print("largest relative differences: %s" % worst[:3], file=sys.stderr)

    def test_forward_matches_when_every_selection_score_is_negative(self):
        """The same checkpoints with e_score_correction_bias lowered below -1: every selection
        score is negative, so an engine that masks dropped groups with 0.0 instead of -inf
        (Hugging Face's noaux_tc) picks experts of dropped groups and fails here."""
        rng = np.random.default_rng(7)
        for dtype in ("f32", "fp8"):
            src = self.dirs[dtype, "q_lora"]
            d = os.path.join(self.tmp.name, "%s-negative-bias" % dtype)
            ck = st.Checkpoint(src)
            tensors = {}
            for name in ck.names():
                kind, shape = ck.info(name)
                if name.endswith("e_score_correction_bias"):
                    tensors[name] = ((-1.5 + 0.1 * rng.standard_normal(shape)).astype(np.float32),
                                     "F32")
                else:
                    tensors[name] = (ck.raw(name), kind)
            st.save_checkpoint(tensors, d, 1)
            with open(os.path.join(src, "config.json")) as f, \
                    open(os.path.join(d, "config.json"), "w") as g:
                g.write(f.read())
            model = ref.Model(d)
            trace = {}
            want = model.forward(self.prompts[33], trace=trace)
            for calls in trace.values():
                self.assertLess(calls[0]["choice"].max(), 0)
            for mode in MODES:
                with self.subTest(dtype=dtype, mode=mode):
                    out = os.path.join(self.tmp.name, "neg-%s-%s.bin" % (dtype, mode))
                    code, stdout, stderr = epinfer("forward", "--model", d, "--tokens",
                                                   ",".join(map(str, self.prompts[33])),
                                                   "--out", out, "--mode", mode)
                    self.assertEqual(code, 0, stdout + stderr)
                    got = np.fromfile(out, dtype="<f4").reshape(33, TINY["vocab_size"])
                    diff = np.abs(got.astype(np.float64) - want).max()
                    self.assertLessEqual(diff, REL_TOL * np.abs(want).max())
                    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))

    def test_forward_rejects_a_token_outside_the_vocabulary(self):
        d = self.dirs["f32", "q_lora"]
        out = os.path.join(self.tmp.name, "never.bin")
        code, _, err = epinfer("forward", "--model", d, "--tokens", "1,%d" % TINY["vocab_size"],
                               "--out", out)
        self.assertNotEqual(code, 0)
        self.assertIn(str(TINY["vocab_size"]), err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
