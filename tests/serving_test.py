#!/usr/bin/python3
"""The service end to end: a router and 2 workers (real processes, UCX between the workers, gRPC
everywhere), clients written here in Python and the project's own `epinfer complete`.

Checks: concurrent streams equal `epinfer generate` greedy output; text, chat and reasoning
fields; cancellation frees KV blocks; deadlines; every bad input answered with the right status
and the field named; a full admission queue; a killed worker answers UNAVAILABLE in time, the
router keeps serving and takes the worker back when it restarts; /metrics token counters equal
what the clients received."""
import os
import signal
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import grpc  # noqa: E402
import epinfer_client as client  # noqa: E402
import grpc_raw  # noqa: E402
from cluster import Cluster, epinfer, make_tiny_model, metric as counter  # noqa: E402

pb = client.pb


class ServingTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        cls.model = make_tiny_model(cls.tmp)
        cls.cluster = Cluster(cls.model, workers=2, router_flags=["--max_concurrent_requests=4"])
        cls.api = client.Completions(cls.cluster.address)

    @classmethod
    def tearDownClass(cls):
        cls.api.close()
        cls.cluster.stop()

    def generate_ids(self, ids, max_tokens):
        code, out, err = epinfer("generate", "--model=" + self.model,
                                 "--tokens=" + ",".join(map(str, ids)),
                                 "--max-tokens=%d" % max_tokens)
        self.assertEqual(code, 0, err)
        last = out.strip().splitlines()[-1] if out.strip() else ""
        return [int(t) for t in last.split(",")] if last else []

    def stream_ids(self, request, timeout_s=120):
        ids, chunks = [], []
        for chunk in self.api.generate(request, timeout_s):
            chunks.append(chunk)
            ids.extend(chunk.token_ids)
        return ids, chunks

    def test_01_concurrent_streams_from_two_clients_equal_generate(self):
        prompts = [[3, 17, 42], [5, 9, 11, 200, 301], [7], [100, 101, 102, 103]]
        expected = [self.generate_ids(p, 12) for p in prompts]
        results = [None] * len(prompts)
        errors = []

        def python_client(i):
            try:
                results[i] = self.stream_ids(client.tokens_request(prompts[i], 12))[0]
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def cpp_client(i):
            code, out, err = epinfer("complete", "--target=" + self.cluster.address,
                                     "--tokens=" + ",".join(map(str, prompts[i])),
                                     "--max-tokens=12", "--print-ids")
            if code != 0:
                errors.append(AssertionError(err))
                return
            last = out.strip().splitlines()[-1]
            results[i] = [int(t) for t in last.split(",")] if last else []

        threads = [threading.Thread(target=python_client if i % 2 == 0 else cpp_client, args=(i,))
                   for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        self.assertEqual(errors, [])
        self.assertEqual(results, expected)

    def test_02_chunks_add_up_to_the_unary_answer(self):
        request = client.chat_request([("system", "Be brief."), ("user", "Hello world")], 16)
        ids, chunks = self.stream_ids(request)
        response = self.api.complete(request)
        self.assertEqual(list(response.token_ids), ids)
        self.assertEqual(response.text, "".join(c.text for c in chunks))
        self.assertEqual(response.reasoning_content, "".join(c.reasoning_content for c in chunks))
        last = chunks[-1]
        self.assertIn(last.finish_reason, (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_EOS))
        self.assertEqual(last.usage.completion_tokens, len(ids))
        self.assertGreater(last.usage.prompt_tokens, 5)
        self.assertTrue(response.request_id.startswith("req-"))

    def test_03_text_prompt_with_a_stop_string(self):
        request = pb.CompletionRequest(text="hello tokens".encode())
        request.sampling.max_tokens = 40
        request.sampling.temperature = 0
        full = self.api.complete(request)
        self.assertGreater(len(full.text), 3, full)
        stop = full.text[2:4]
        request.sampling.stop.append(stop.encode())
        stopped = self.api.complete(request)
        self.assertEqual(stopped.finish_reason, pb.FINISH_REASON_STOP)
        self.assertEqual(stopped.matched_stop, stop)
        self.assertEqual(stopped.text, full.text[:full.text.index(stop)])

    def test_04_cancelling_a_stream_frees_its_kv_blocks(self):
        call = self.api.generate(client.tokens_request([3, 4, 5], 2000, ignore_eos=True))
        received = 0
        for chunk in call:
            received += len(chunk.token_ids)
            if received >= 5:
                break
        call.cancel()
        self.assert_blocks_freed()

    def assert_blocks_freed(self, timeout_s=15):
        self.cluster.assert_blocks_freed(self, timeout_s)

    def test_05_a_deadline_ends_the_request_and_frees_its_blocks(self):
        with self.assertRaises(grpc.RpcError) as caught:
            for _ in self.api.generate(client.tokens_request([3, 4], 2000, ignore_eos=True),
                                       timeout_s=0.5):
                pass
        self.assertEqual(caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assert_blocks_freed()

    def test_06_bad_input_is_answered_with_its_status_and_field(self):
        cases = []
        empty = pb.CompletionRequest()
        cases.append((empty, grpc.StatusCode.INVALID_ARGUMENT, "prompt"))
        r = client.tokens_request([1], 4)
        r.sampling.temperature = 3
        cases.append((r, grpc.StatusCode.INVALID_ARGUMENT, "sampling.temperature"))
        r = client.tokens_request([1], 4)
        r.sampling.top_p = 1.5
        cases.append((r, grpc.StatusCode.INVALID_ARGUMENT, "sampling.top_p"))
        cases.append((client.tokens_request([1, 512], 4), grpc.StatusCode.INVALID_ARGUMENT,
                      "tokens.ids[1]"))
        cases.append((client.tokens_request([1] * 2500, 100), grpc.StatusCode.INVALID_ARGUMENT,
                      "context length 2560"))
        cases.append((client.chat_request([("robot", "hi")], 4), grpc.StatusCode.INVALID_ARGUMENT,
                      "chat.messages[0].role"))
        r = client.tokens_request([1], 4)
        r.sampling.stop.append(b"")
        cases.append((r, grpc.StatusCode.INVALID_ARGUMENT, "sampling.stop[0]"))
        r = client.tokens_request([1], 4)
        r.model = "gpt-nothing"
        cases.append((r, grpc.StatusCode.NOT_FOUND, "model"))
        r = client.tokens_request([1], 4)
        r.request_id = "bad id!"
        cases.append((r, grpc.StatusCode.INVALID_ARGUMENT, "request_id"))
        for request, code, field in cases:
            with self.subTest(field=field):
                with self.assertRaises(grpc.RpcError) as caught:
                    self.api.complete(request)
                self.assertEqual(caught.exception.code(), code, caught.exception.details())
                self.assertIn(field, caught.exception.details())
        # Invalid UTF-8 in a text prompt (hand-encoded: field 2, bytes ff fe).
        with self.assertRaises(grpc.RpcError) as caught:
            self.api.complete_raw(b"\x12\x02\xff\xfe", timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                         caught.exception.details())
        self.assertEqual(grpc_raw.health_check(self.cluster.address), "SERVING")

    def test_07_a_full_admission_queue_answers_resource_exhausted(self):
        calls = [self.api.generate(client.tokens_request([9, 8, 7], 500, ignore_eos=True))
                 for _ in range(6)]
        codes = []
        for call in calls:
            try:
                for _ in call:
                    break
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        for call in calls:
            call.cancel()
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)
        self.assertGreaterEqual(codes.count(grpc.StatusCode.OK), 1)
        self.assert_blocks_freed()

    def test_08_metrics_count_what_the_clients_received(self):
        before = self.cluster.metrics()
        received = 0
        prompt = 0
        for i in range(3):
            ids, chunks = self.stream_ids(client.tokens_request([11 + i, 12, 13], 7 + i))
            received += len(ids)
            prompt += chunks[-1].usage.prompt_tokens
        after = self.cluster.metrics()
        name = "epinfer_router_generation_tokens_total"
        self.assertEqual(counter(after, name) - counter(before, name), received)
        name = "epinfer_router_prompt_tokens_total"
        self.assertEqual(counter(after, name) - counter(before, name), prompt)
        self.assertIn('epinfer_router_requests_total{code="OK",method="Generate"}', after)
        self.assertIn("epinfer_router_time_to_first_token_seconds_bucket", after)
        worker_metrics = urllib.request.urlopen(
            "http://127.0.0.1:%d/metrics" % self.cluster.workers[0].ports["metrics"],
            timeout=5).read().decode()
        self.assertIn("epinfer_moe_dispatch_seconds_count", worker_metrics)
        self.assertIn('epinfer_moe_sent_bytes_total{peer="1"}', worker_metrics)
        self.assertIn("epinfer_worker_kv_blocks_total", worker_metrics)

    def test_09_a_killed_worker_fails_its_requests_in_time_and_is_taken_back(self):
        # Two long requests: least-loaded routing puts one on each worker.
        calls = [self.api.generate(client.tokens_request([20 + i, 21], 2000, ignore_eos=True),
                                   timeout_s=120) for i in range(2)]
        firsts = [next(iter(call)) for call in calls]
        self.assertTrue(all(f.token_ids for f in firsts))
        killed_at = time.monotonic()
        self.cluster.workers[1].proc.send_signal(signal.SIGKILL)
        codes = []
        for call in calls:
            try:
                for _ in call:
                    pass
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
            if len(codes) == 1:
                call.cancel()
        self.assertIn(grpc.StatusCode.UNAVAILABLE, codes)
        self.assertLess(time.monotonic() - killed_at, 60)
        # The router keeps serving: the survivor forms a group of 1.
        self.assertEqual(grpc_raw.health_check(self.cluster.address), "SERVING")
        self.cluster.wait_ranks(1)
        ids, _ = self.stream_ids(client.tokens_request([3, 17, 42], 12))
        self.assertEqual(ids, self.generate_ids([3, 17, 42], 12))
        # The worker comes back (same id): the group re-forms with 2 ranks and serves.
        self.cluster.workers[1] = self.cluster.start_worker(1)
        self.cluster.wait_ranks(2)
        ids, _ = self.stream_ids(client.tokens_request([5, 9, 11], 12))
        self.assertEqual(ids, self.generate_ids([5, 9, 11], 12))


if __name__ == "__main__":
    unittest.main(verbosity=2)
