#!/usr/bin/python3
"""Expert parallelism end to end through `epinfer forward --ep N`: the routed experts sharded over
N ranks (threads, or processes over UCX), the sequences spread over the ranks' attention, must
give the single-rank logits (f32: max |diff| <= 1e-5 x max |logit|, same argmax), in prefill and
decode, also with replicated experts; narrower activation encodings stay close."""
import json
import os
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import procs  # noqa: E402

SEQUENCES = [[(7 * i + 3) % 512 for i in range(n)] for n in (7, 1, 33, 12, 5)]
TOKENS = ";".join(",".join(str(t) for t in s) for s in SEQUENCES)
ROWS = sum(len(s) for s in SEQUENCES)


def epinfer(*args):
    return procs.run([procs.runfile("cli/epinfer")] + [str(a) for a in args], timeout_s=600)


class EpForwardTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        cls.model = os.path.join(cls.tmp, "tiny")
        code, _, err = epinfer("make-model", "--preset", "tiny", "--dtype", "f32", "--seed", 9,
                               "--out", cls.model)
        assert code == 0, err
        cls.reference = {mode: cls.forward(mode) for mode in ("prefill", "decode")}

    @classmethod
    def forward(cls, mode, *extra):
        out = tempfile.mktemp(dir=cls.tmp)
        code, _, err = epinfer("forward", "--model", cls.model, "--tokens", TOKENS, "--out", out,
                               "--mode", mode, *extra)
        if code != 0:
            raise AssertionError("forward %s %s failed (%d): %s" % (mode, extra, code, err))
        logits = np.fromfile(out, dtype=np.float32)
        assert logits.size == ROWS * 512, logits.size
        return logits.reshape(ROWS, 512)

    def assert_same(self, got, mode, tolerance=1e-5):
        want = self.reference[mode]
        scale = np.abs(want).max()
        self.assertLessEqual(np.abs(got - want).max(), tolerance * scale)
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))

    def test_local_ranks_give_the_single_rank_logits(self):
        for ep, mode in ((2, "prefill"), (4, "prefill"), (2, "decode"), (4, "decode")):
            with self.subTest(ep=ep, mode=mode):
                self.assert_same(self.forward(mode, "--ep", ep), mode)

    def test_ucx_processes_give_the_single_rank_logits(self):
        for ep, mode in ((2, "prefill"), (4, "decode")):
            with self.subTest(ep=ep, mode=mode):
                self.assert_same(self.forward(mode, "--ep", ep, "--transport", "ucx"), mode)
        # Several UCX lanes per rank: every all-to-all exchanges its sizes first.
        self.assert_same(self.forward("prefill", "--ep", 2, "--transport", "ucx", "--comm_lanes", 2,
                                      "--threads", 2), "prefill")

    def test_nccl_processes_give_the_single_rank_logits(self):
        # One process per GPU (NCCL allows one rank of a group per device): a group of 2 where
        # there are 2 GPUs; on one GPU, a group of one whose every exchange goes through NCCL to
        # itself. Skips only where the build has no CUDA or the machine no CUDA device.
        out = os.path.join(self.tmp, "nccl_probe")
        code, _, err = epinfer("forward", "--model", self.model, "--tokens", "1,2", "--out", out,
                               "--ep", 1, "--transport", "nccl")
        if code != 0 and ("this build has no CUDA" in err or "no usable CUDA device" in err
                          or "no CUDA device" in err):
            self.skipTest("NCCL not runnable here: " + err.strip().splitlines()[-1])
        self.assertEqual(code, 0, err)
        gpus = 0
        try:
            _, listing, _ = procs.run(["nvidia-smi", "-L"], timeout_s=60)
            gpus = listing.count("GPU ")
        except (OSError, FileNotFoundError):
            pass
        for ep, mode in ((1, "prefill"), (1, "decode")) + (((2, "prefill"), (2, "decode"))
                                                             if gpus >= 2 else ()):
            with self.subTest(ep=ep, mode=mode):
                self.assert_same(self.forward(mode, "--ep", ep, "--transport", "nccl"), mode)

    def test_replicated_experts_give_the_single_rank_logits(self):
        # 2 ranks × 10 slots for 16 experts: experts 0-3 have a second replica on the other rank.
        layer = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3]
        layer = layer[:8] + [0, 1] + layer[8:16] + [2, 3]
        placement = os.path.join(self.tmp, "placement.json")
        with open(placement, "w") as f:
            json.dump({"num_ranks": 2, "phy2log": [layer, list(reversed(layer))]}, f)
        for transport in ("local", "ucx"):
            with self.subTest(transport=transport):
                self.assert_same(self.forward("prefill", "--ep", 2, "--placement", placement,
                                              "--transport", transport), "prefill")

    def test_bf16_dispatch_and_combine_stay_close(self):
        got = self.forward("prefill", "--ep", 2, "--dispatch_dtype", "bf16", "--combine_dtype",
                           "bf16")
        self.assert_same(got, "prefill", tolerance=1e-2)

    def test_fp8_dispatch_runs_and_mostly_agrees(self):
        got = self.forward("prefill", "--ep", 2, "--dispatch_dtype", "fp8", "--combine_dtype", "bf16")
        agreement = (got.argmax(1) == self.reference["prefill"].argmax(1)).mean()
        self.assertGreaterEqual(agreement, 0.8)

    def test_bad_ep_settings_are_usage_errors(self):
        out = os.path.join(self.tmp, "unused")
        for extra, message in ((["--ep", 3], "3 ranks do not divide 16"),
                               (["--ep", 2, "--transport", "carrier-pigeon"], "--transport"),
                               (["--ep", 2, "--dispatch_dtype", "f16"], "activation dtype"),
                               (["--ep", 2, "--transport", "ucx", "--comm_lanes", 0],
                                "--comm_lanes")):
            code, _, err = epinfer("forward", "--model", self.model, "--tokens", "1,2", "--out",
                                   out, *extra)
            self.assertEqual(code, 2, err)
            self.assertIn(message, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
