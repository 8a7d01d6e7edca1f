#!/usr/bin/python3
"""UCX communicator with ranks as real processes on this host (TCP/shared memory/CMA as UCX
chooses): the conformance suite passes with 2, 3 and 4 ranks, and a rank killed mid-run makes
every other rank fail its collective with an error instead of hanging."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "lib"))
import procs  # noqa: E402


def start_group(size, extra=(), per_rank=None):
    rendezvous = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    binary = procs.runfile("worker/comm/comm_conformance")
    per_rank = per_rank or {}
    return [procs.Process([binary, "--rank=%d" % r, "--size=%d" % size,
                           "--rendezvous=" + rendezvous] + list(extra) + per_rank.get(r, []))
            for r in range(size)]


class UcxTest(unittest.TestCase):

    def assert_every_rank_passes(self, size, flags):
        ranks = start_group(size, flags)
        try:
            for r, p in enumerate(ranks):
                self.assertEqual(p.wait(timeout_s=240), 0, "rank %d:\n%s" % (r, p.output()))
                self.assertIn("rank %d passed" % r, p.output())
        finally:
            for p in ranks:
                p.kill()

    def assert_a_killed_rank_fails_the_others(self, flags):
        """Rank 2 of 3 dies at step 4: ranks 0 and 1 fail their collective, neither hangs."""
        ranks = start_group(3, ["--steps=20", "--timeout_s=20"] + flags, {2: ["--die_at_step=4"]})
        try:
            self.assertEqual(ranks[2].wait(timeout_s=120), -9)
            for r in (0, 1):
                code = ranks[r].wait(timeout_s=120)
                self.assertEqual(code, 3, "rank %d:\n%s" % (r, ranks[r].output()))
                self.assertRegex(ranks[r].output(),
                                 r"rank %d failed: (UNAVAILABLE|DEADLINE_EXCEEDED)" % r)
        finally:
            for p in ranks:
                p.kill()

    def test_conformance_suite_passes_with_2_3_and_4_processes(self):
        for size in (2, 3, 4):
            with self.subTest(size=size):
                self.assert_every_rank_passes(size, ["--steps=6"])

    def test_conformance_suite_passes_over_several_lanes(self):
        # 3 UCP workers per rank: large messages split over lanes driven by pool threads.
        for size in (2, 3):
            with self.subTest(size=size):
                self.assert_every_rank_passes(size, ["--steps=4", "--lanes=3"])

    def test_a_killed_rank_makes_the_others_fail_not_hang(self):
        self.assert_a_killed_rank_fails_the_others([])

    def test_a_killed_rank_makes_the_others_fail_over_several_lanes_too(self):
        self.assert_a_killed_rank_fails_the_others(["--lanes=2"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
