#!/usr/bin/python3
"""The three server binaries, as an operator sees them: they listen, log where, answer health and
reflection, export /metrics, stop cleanly on SIGTERM and reject bad flags with exit code 2."""
import json
import os
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import grpc  # noqa: E402
import grpc_raw  # noqa: E402
import procs  # noqa: E402

MODEL = None  # a tiny checkpoint, made once in setUpModule
COMPONENTS = {
    "router": ("router/router", lambda: ["--cluster_port=0", "--model=" + MODEL],
               "epinfer.v1.Completions"),
    "worker": ("worker/worker", lambda: ["--model=" + MODEL], "epinfer.v1.Worker"),
    "scheduler": ("scheduler/scheduler", lambda: [], "epinfer.v1.Scheduler"),
}
LOCAL = ["--bind=127.0.0.1", "--port=0", "--metrics_port=0"]


def setUpModule():
    global MODEL
    MODEL = os.path.join(os.environ.get("TEST_TMPDIR", "/tmp"), "binaries-tiny")
    code, _, err = procs.run([procs.runfile("cli/epinfer"), "make-model", "--preset=tiny",
                              "--out=" + MODEL], timeout_s=120)
    assert code == 0, err


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as response:
        return response.status, response.read().decode()


class BinariesTest(unittest.TestCase):

    def test_each_binary_serves_health_reflection_metrics_and_stops_on_sigterm(self):
        for name, (path, extra, service) in COMPONENTS.items():
            with self.subTest(component=name):
                with procs.Process([procs.runfile(path)] + LOCAL + extra()) as p:
                    ports = p.wait_listening()
                    address = "127.0.0.1:%d" % ports["grpc"]
                    expected = "NOT_SERVING" if name == "router" else "SERVING"  # no workers
                    self.assertEqual(grpc_raw.health_check(address), expected)
                    self.assertIn(service, grpc_raw.list_services(address))
                    self.assertIn("grpc.health.v1.Health", grpc_raw.list_services(address))
                    status, body = metrics(ports["metrics"])
                    self.assertEqual(status, 200)
                    self.assertIn('epinfer_build_info{component="%s"' % name, body)
                    self.assertIn("process_resident_memory_bytes", body)
                    self.assertIn("process_cpu_seconds_total", body)
                    self.assertEqual(p.terminate(timeout_s=30), 0, p.output())
                    self.assertIn("stopped", p.output())

    def test_router_without_workers_is_not_serving_and_answers_unavailable(self):
        path, extra, _ = COMPONENTS["router"]
        with procs.Process([procs.runfile(path)] + LOCAL + extra() + ["--queue_timeout_s=1"]) as p:
            ports = p.wait_listening()
            self.assertIn("cluster", ports)
            address = "127.0.0.1:%d" % ports["grpc"]
            self.assertEqual(grpc_raw.health_check(address), "NOT_SERVING")
            # CompletionRequest{tokens: {ids: [1, 2]}}: field 3 holding packed field 1.
            code = grpc_raw.call_status(address, "/epinfer.v1.Completions/Complete",
                                        b"\x1a\x04\x0a\x02\x01\x02")
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(grpc_raw.health_check("127.0.0.1:%d" % ports["cluster"]), "SERVING")

    def test_bad_flags_exit_2_with_usage(self):
        cases = [["--bogus"], ["--port=notaport"], ["--port=70000"], ["--log_level=loud"],
                 ["positional"], ["--drain_timeout_s=-1"]]
        for name, (path, _, _) in COMPONENTS.items():
            for flags in cases:
                with self.subTest(component=name, flags=flags):
                    code, _, err = procs.run([procs.runfile(path)] + flags, timeout_s=30)
                    self.assertEqual(code, 2, err)
                    self.assertIn("usage: %s" % name, err)

    def test_worker_transport_flags_are_checked(self):
        path, extra, _ = COMPONENTS["worker"]
        for flags, message in ((["--transport=carrier-pigeon"], "--transport"),
                               (["--comm_lanes=0"], "--comm_lanes"),
                               (["--comm_lanes=17"], "--comm_lanes")):
            with self.subTest(flags=flags):
                code, _, err = procs.run([procs.runfile(path)] + LOCAL + extra() + flags,
                                         timeout_s=30)
                self.assertEqual(code, 2, err)
                self.assertIn(message, err)

    def test_model_info_reports_the_671b_config_and_a_made_model(self):
        epinfer = procs.runfile("cli/epinfer")
        code, out, err = procs.run(
            [epinfer, "model-info",
             "--config=" + procs.runfile("worker/model/testdata/deepseek_v3_671b_config.json")])
        self.assertEqual(code, 0, err)
        # DeepSeek-V3's technical report: 671B parameters, 37B activated per token; its MLA
        # caches 512 + 64 values per token and layer, 61 layers, 2 bytes each.
        self.assertIn("parameters: 671,0", out)
        self.assertIn("(671.0 B)", out)
        self.assertRegex(out, r"parameters active per token: 37,\d{3},\d{3},\d{3} \(37\.\d B\)")
        self.assertIn("576 values x 61 layers = 70,272 bytes in BF16", out)
        # The tiny model, counted here from its config.json field by field.
        with open(os.path.join(MODEL, "config.json")) as f:
            c = json.load(f)
        h, heads = c["hidden_size"], c["num_attention_heads"]
        qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
        kv_dim = c["kv_lora_rank"] + c["qk_rope_head_dim"]
        attention = (2 * h + h * c["q_lora_rank"] + c["q_lora_rank"] +
                     c["q_lora_rank"] * heads * qk + h * kv_dim + c["kv_lora_rank"] +
                     c["kv_lora_rank"] * heads * (c["qk_nope_head_dim"] + c["v_head_dim"]) +
                     heads * c["v_head_dim"] * h)
        layers, dense = c["num_hidden_layers"], c["first_k_dense_replace"]
        moe = (c["n_routed_experts"] * (h + 1) +
               (c["n_routed_experts"] + c["n_shared_experts"]) * 3 * h *
               c["moe_intermediate_size"])
        total = (2 * c["vocab_size"] * h + h + layers * attention +
                 dense * 3 * h * c["intermediate_size"] + (layers - dense) * moe)
        code, out, err = procs.run([epinfer, "model-info", "--model=" + MODEL])
        self.assertEqual(code, 0, err)
        self.assertIn("parameters: {:,} ".format(total), out)
        self.assertIn("= {:,} bytes in BF16".format(kv_dim * layers * 2), out)
        code, _, err = procs.run([epinfer, "model-info"])
        self.assertEqual(code, 2)
        self.assertIn("--model DIR or --config FILE", err)

    def test_generate_stops_at_a_stop_id_and_repeats_with_a_seed(self):
        epinfer = procs.runfile("cli/epinfer")

        def generate(*flags):
            code, out, err = procs.run([epinfer, "generate", "--model=" + MODEL,
                                        "--tokens=3,17,42", "--max-tokens=8"] + list(flags))
            self.assertEqual(code, 0, err)
            last = out.strip().splitlines()[-1] if out.strip() else ""
            return [int(t) for t in last.split(",")] if last else []

        greedy = generate("--ignore_eos")
        self.assertEqual(len(greedy), 8)
        stop = greedy[3]
        # Generation ends at the stop id's first occurrence, which is not returned.
        self.assertEqual(generate("--ignore_eos", "--stop_token_ids=%d" % stop),
                         greedy[:greedy.index(stop)])
        sampled = generate("--ignore_eos", "--temperature=1.0", "--top_p=0.9", "--seed=11")
        self.assertEqual(len(sampled), 8)
        self.assertEqual(generate("--ignore_eos", "--temperature=1.0", "--top_p=0.9", "--seed=11"),
                         sampled)

    def test_help_exits_0(self):
        code, out, _ = procs.run([procs.runfile("router/router"), "--help"], timeout_s=30)
        self.assertEqual(code, 0)
        self.assertIn("--cluster_port", out)

    def test_port_in_use_fails_startup_with_a_message(self):
        path, extra, _ = COMPONENTS["worker"]
        with procs.Process([procs.runfile(path)] + LOCAL + extra()) as first:
            ports = first.wait_listening()
            code, _, err = procs.run([procs.runfile(path), "--bind=127.0.0.1", "--metrics_port=0",
                                      "--port=%d" % ports["grpc"]] + extra(), timeout_s=30)
            self.assertEqual(code, 1, err)
            self.assertIn("cannot start", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
