#!/usr/bin/python3
"""Live expert rebalancing on a local cluster: 4 workers, a tiny model with 32 routed experts, a
skewed workload that makes a few experts hot. The scheduler (EPLB on the telemetry window)
proposes a new placement, the ranks load their new experts beside the running ones and switch
at the same step; requests in flight keep running and their greedy outputs do not change; the
measured max/mean rank load drops. Losing the scheduler leaves serving running; telemetry
resumes when it is back."""
import os
import re
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import grpc  # noqa: E402
import epinfer_client as client  # noqa: E402
import procs  # noqa: E402

WORKERS = 4
HOT_PROMPT = [7] * 40  # prefill-heavy: the same token over and over keeps a few experts hot


def epinfer(*args, timeout_s=300):
    return procs.run([procs.runfile("cli/epinfer")] + [str(a) for a in args], timeout_s=timeout_s)


class RebalanceTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        cls.model = os.path.join(cls.tmp, "tiny32")
        code, _, err = epinfer("make-model", "--preset=tiny", "--dtype=bf16", "--seed=5",
                               "--n_routed_experts=32", "--out=" + cls.model)
        assert code == 0, err
        binary = procs.runfile("cli/epinfer")
        cls.router = procs.Process([binary, "router", "--model=" + cls.model,
                                    "--workers=%d" % WORKERS, "--redundant_slots_per_rank=1",
                                    "--bind=127.0.0.1", "--port=0",
                                    "--cluster_port=0", "--metrics_port=0",
                                    "--heartbeat_interval_ms=200", "--group_settle_ms=1000"])
        ports = cls.router.wait_listening()
        cls.address = "127.0.0.1:%d" % ports["grpc"]
        cls.cluster = "127.0.0.1:%d" % ports["cluster"]
        cls.scheduler = cls.start_scheduler()
        cls.workers = []
        for i in range(WORKERS):
            p = procs.Process([binary, "worker", "--model=" + cls.model, "--router=" + cls.cluster,
                               "--scheduler=" + cls.scheduler_address, "--worker_id=w%d" % i,
                               "--bind=127.0.0.1", "--port=0", "--metrics_port=0", "--threads=1",
                               "--kv_cache_mb=32", "--telemetry_interval_ms=300"])
            p.ports = p.wait_listening()
            cls.workers.append(p)
        cls.api = client.Completions(cls.address)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if cls.api.list_models().models[0].num_ranks == WORKERS:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)

    @classmethod
    def start_scheduler(cls, port=0, threshold=100.0, min_window_tokens=200):
        # threshold 100: watch only; 1.1: rebalance.
        p = procs.Process([procs.runfile("cli/epinfer"), "scheduler", "--router=" + cls.cluster,
                           "--bind=127.0.0.1", "--port=%d" % port, "--metrics_port=0",
                           "--rebalance_interval_s=2", "--window_s=60",
                           "--min_window_tokens=%d" % min_window_tokens,
                           "--imbalance_threshold=%g" % threshold])
        ports = p.wait_listening()
        cls.scheduler_address = "127.0.0.1:%d" % ports["grpc"]
        cls.scheduler_metrics = ports["metrics"]
        return p

    @classmethod
    def tearDownClass(cls):
        cls.api.close()
        for p in cls.workers + [cls.scheduler, cls.router]:
            p.kill()

    def generate(self, prompt, n):
        code, out, err = epinfer("generate", "--model=" + self.model,
                                 "--tokens=" + ",".join(map(str, prompt)), "--max-tokens=%d" % n)
        self.assertEqual(code, 0, err)
        return [int(t) for t in out.strip().splitlines()[-1].split(",")]

    def stream(self, prompt, n):
        ids = []
        for chunk in self.api.generate(client.tokens_request(prompt, n, ignore_eos=True), 300):
            ids.extend(chunk.token_ids)
        return ids

    def placement_versions(self):
        return [client.worker_info("127.0.0.1:%d" % w.ports["grpc"]).placement_version
                for w in self.workers]

    def wait_load(self, predicate, timeout_s=60):
        """The scheduler's load once it satisfies `predicate` and has settled: the same over two
        reads a second (over three telemetry intervals) apart, so that every rank's reports of
        the traffic so far are in the window, not only the first ones to arrive."""
        deadline = time.monotonic() + timeout_s
        previous = None
        while time.monotonic() < deadline:
            load = client.scheduler_load(self.scheduler_address)
            if not predicate(load):
                previous = None
            elif previous is not None and (load.imbalance, load.placement_version) == (
                    previous.imbalance, previous.placement_version):
                return load
            else:
                previous = load
            time.sleep(1.0)
        self.fail("scheduler load never settled on the condition: %s" % load)

    def run_skewed(self, rounds, results, errors, prompts):
        def one(prompt):
            try:
                results.append((tuple(prompt), self.stream(prompt, 4)))
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        for _ in range(rounds):
            threads = [threading.Thread(target=one, args=(p,)) for p in prompts]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)

    def test_rebalancing_lowers_the_imbalance_without_failing_or_changing_requests(self):
        prompts = [HOT_PROMPT] * 8 + [[11, 12, 13]]
        expected = {tuple(p): self.generate(p, 4) for p in prompts}
        self.assertEqual(set(self.placement_versions()), {1})
        results, errors = [], []
        self.run_skewed(3, results, errors, prompts)
        before = self.wait_load(lambda l: l.ranks_reporting == WORKERS and l.imbalance > 1.0)
        # Now let the scheduler act (same address, so the workers' telemetry reconnects), and
        # keep traffic flowing while it proposes and the ranks switch.
        port = int(self.scheduler_address.rsplit(":", 1)[1])
        self.scheduler.kill()
        # The proposal from a few rounds of traffic, not the first one's steps alone: one clean
        # CI run read 1.80 before and 1.82 after with a proposal made after 200 tokens.
        type(self).scheduler = self.start_scheduler(port, threshold=1.1, min_window_tokens=1500)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and min(self.placement_versions()) < 2:
            self.run_skewed(1, results, errors, prompts)
        self.assertGreaterEqual(min(self.placement_versions()), 2, "no rebalance happened")
        self.assertEqual(len(set(self.placement_versions())), 1)
        self.run_skewed(3, results, errors, prompts)
        version = min(self.placement_versions())
        # Every rank reporting under the new placement: right after the switch the window holds
        # some ranks' reports only, and their imbalance describes part of the group.
        after = self.wait_load(lambda l: l.placement_version >= version and
                               l.ranks_reporting == WORKERS)
        self.assertEqual(errors, [])
        for prompt, ids in results:
            self.assertEqual(ids, expected[prompt])
        print("rank load max/mean: before %.3f, after %.3f (placement version %d)" %
              (before.imbalance, after.imbalance, version))
        self.assertLess(after.imbalance, before.imbalance)
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.scheduler_metrics,
                                         timeout=5).read().decode()
        self.assertRegex(metrics, r"epinfer_scheduler_rebalances_total [1-9]")
        durations = re.search(r"^epinfer_scheduler_rebalance_duration_seconds_sum (\S+)$", metrics, re.M)
        counts = re.search(r"^epinfer_scheduler_rebalance_duration_seconds_count (\S+)$", metrics, re.M)
        if durations and counts and float(counts.group(1)) > 0:
            print("live rebalance: %.3f s from proposal to every rank switched (mean of %d)" %
                  (float(durations.group(1)) / float(counts.group(1)), int(float(counts.group(1)))))
        self.assertIn('epinfer_scheduler_rebalance_imbalance{when="before"}', metrics)

    def test_serving_survives_the_scheduler_and_telemetry_resumes(self):
        port = int(self.scheduler_address.rsplit(":", 1)[1])
        self.scheduler.kill()
        ids = self.stream([3, 17, 42], 10)
        self.assertEqual(ids, self.generate([3, 17, 42], 10))
        type(self).scheduler = self.start_scheduler(port)  # same address: workers reconnect
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.stream([5, 9], 6)
            if client.scheduler_load(self.scheduler_address).window_reports > 0:
                return
        self.fail("telemetry did not resume after the scheduler came back")


if __name__ == "__main__":
    unittest.main(verbosity=2)
