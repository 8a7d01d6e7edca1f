#!/usr/bin/python3
"""The OpenAI-compatible HTTP API, TLS and the API key, end to end: real router and worker
processes on 127.0.0.1, an HTTP client from Python's standard library, gRPC from python3-grpcio.

Checks: /v1/models, /v1/completions and /v1/chat/completions answer in OpenAI's documented format
with the same tokens and text as the gRPC API for the same request; streamed chunks add up to the
unary answer; bad input is a 400 naming the field, with the gRPC API's message; admission, queue
and deadline failures map to 429, 503 and 504; a client that disconnects cancels its request and
frees its KV blocks; the API key guards HTTP and gRPC; the public gRPC port serves TLS (and mTLS)
to TLS clients only; /metrics counts HTTP requests by method."""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import grpc  # noqa: E402
import epinfer_client as client  # noqa: E402
from cluster import Cluster, epinfer, make_tiny_model, metric, scrape, start_router  # noqa: E402

pb = client.pb
API_KEY = "sk-test-0123456789abcdef"
FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_EOS: "stop",
          pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_CANCELLED: "cancelled"}

# A throwaway PKI for TLS: a CA, a server certificate for 127.0.0.1, client certificates signed
# by the CA and by a second, untrusted CA.
OPENSSL_CONFIG = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = epinfer-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
"""


def openssl(*args):
    done = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def make_pki(tmp):
    config = os.path.join(tmp, "openssl.cnf")
    with open(config, "w") as f:
        f.write(OPENSSL_CONFIG)
    path = lambda name: os.path.join(tmp, name)  # noqa: E731
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue_ca"):
        openssl("req", "-x509", "-new", *new_key, "-keyout", path(ca + ".key"), "-out",
                path(ca + ".pem"), "-days", "2", "-config", config, "-extensions", "ca",
                "-subj", "/CN=" + ca)
    for name, ca, extensions in (("server", "ca", "server"), ("client", "ca", "client"),
                                 ("rogue_client", "rogue_ca", "client")):
        openssl("req", "-new", *new_key, "-keyout", path(name + ".key"), "-out",
                path(name + ".csr"), "-config", config, "-subj", "/CN=" + name)
        openssl("x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"), "-CAkey",
                path(ca + ".key"), "-CAcreateserial", "-out", path(name + ".pem"), "-days", "2",
                "-extfile", config, "-extensions", extensions)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Reply:
    """An HTTP answer: status, headers, body (parsed JSON when it is JSON, SSE events when the
    answer is an event stream)."""

    def __init__(self, response):
        self.status = response.status
        self.headers = response.headers
        self.content_type = response.getheader("Content-Type", "")
        if self.content_type.startswith("text/event-stream"):
            self.events = read_sse(response)
            self.json = None
        else:
            raw = response.read()
            self.events = None
            self.json = json.loads(raw) if raw else None


def read_sse(lines):
    """SSE "data:" payloads, one per event (W3C Server-Sent Events): "[DONE]" or parsed JSON."""
    events, data = [], []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data:
                payload = "\n".join(data)
                events.append(payload if payload == "[DONE]" else json.loads(payload))
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    return events


def request(port, method, path, body=None, headers=None, timeout_s=120):
    """One HTTP request on its own connection; `body` is a dict (sent as JSON) or raw bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        conn.request(method, path, body=payload, headers=all_headers)
        return Reply(conn.getresponse())
    finally:
        conn.close()


def grpc_request(body, chat=False):
    """The v1.CompletionRequest an OpenAI body means (written from completion.proto)."""
    r = pb.CompletionRequest(model=body.get("model", ""))
    if chat:
        r.chat.SetInParent()
        for m in body["messages"]:
            message = r.chat.messages.add()
            message.role = m["role"]
            message.content = m["content"].encode()
    elif isinstance(body["prompt"], str):
        r.text = body["prompt"].encode()
    else:
        r.tokens.ids.extend(body["prompt"])
    s = r.sampling
    s.max_tokens = body.get("max_tokens", 0)
    for field in ("temperature", "top_p"):
        if field in body:
            setattr(s, field, body[field])
    s.top_k = body.get("top_k", 0)
    if "seed" in body:
        s.seed = body["seed"]
    stop = body.get("stop", [])
    s.stop.extend(x.encode() for x in ([stop] if isinstance(stop, str) else stop))
    s.ignore_eos = body.get("ignore_eos", False)
    if chat and body.get("logprobs"):
        s.logprobs = body.get("top_logprobs", 0)
    elif not chat and "logprobs" in body:
        s.logprobs = body["logprobs"]
    return r


class HttpTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        cls.model = make_tiny_model(cls.tmp)
        cls.pki = staticmethod(make_pki(cls.tmp))
        key_file = os.path.join(cls.tmp, "api_key")
        with open(key_file, "w") as f:
            f.write(API_KEY + "\n")
        cls.processes = []
        cls.cluster = Cluster(cls.model, workers=2,
                              router_flags=["--http_port=0", "--max_concurrent_requests=4"])
        cls.processes.append(cls.cluster)
        cls.port = cls.cluster.http_port
        cls.api = cls.cluster.api()
        # TLS on the public gRPC port, the API key on both APIs, one worker.
        cls.ca = read(cls.pki("ca.pem"))
        cls.secure = Cluster(
            cls.model, workers=1,
            router_flags=["--http_port=0", "--tls_cert=" + cls.pki("server.pem"),
                          "--tls_key=" + cls.pki("server.key"), "--api_key_file=" + key_file],
            credentials=grpc.ssl_channel_credentials(root_certificates=cls.ca),
            metadata=[("authorization", "Bearer " + API_KEY)])
        cls.processes.append(cls.secure)
        # Routers without workers: requests wait in the queue.
        cls.mtls = cls.start_router(["--tls_cert=" + cls.pki("server.pem"),
                                     "--tls_key=" + cls.pki("server.key"),
                                     "--tls_client_ca=" + cls.pki("ca.pem")])
        cls.queueing = cls.start_router(["--http_port=0", "--max_concurrent_requests=1",
                                         "--queue_timeout_s=60", "--http_timeout_s=5"])
        cls.no_group = cls.start_router(["--http_port=0", "--queue_timeout_s=0"])

    @classmethod
    def start_router(cls, flags):
        router = start_router(cls.model, 1, flags)
        cls.processes.append(router)
        return router

    @classmethod
    def tearDownClass(cls):
        cls.api.close()
        processes = []
        for p in cls.processes:
            processes += p.workers + [p.router] if isinstance(p, Cluster) else [p]
        for p in processes:
            p.kill()
        # Under --config=asan/ubsan, a report in any process fails the test.
        reports = [p.output() for p in processes
                   if "Sanitizer" in p.output() or "runtime error:" in p.output()]
        assert not reports, "\n".join(reports)

    def post(self, path, body, port=None, headers=None, timeout_s=120):
        return request(port or self.port, "POST", path, body, headers, timeout_s)

    def assert_error(self, reply, status, param=None, message=None):
        """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
        self.assertEqual(reply.status, status, reply.json)
        self.assertEqual(reply.content_type, "application/json")
        error = reply.json["error"]
        self.assertEqual(set(error), {"message", "type", "param", "code"})
        self.assertIsInstance(error["message"], str)
        self.assertIsInstance(error["type"], str)
        if param is not None:
            self.assertEqual(error["param"], param, error)
        if message is not None:
            self.assertEqual(error["message"], message)
        return error

    def test_models_lists_the_served_model_as_grpc_does(self):
        reply = request(self.port, "GET", "/v1/models")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json["object"], "list")
        expected = self.api.list_models().models
        self.assertEqual([m["id"] for m in reply.json["data"]], [m.id for m in expected])
        model = reply.json["data"][0]
        self.assertEqual(model["object"], "model")
        self.assertIsInstance(model["created"], int)
        self.assertIsInstance(model["owned_by"], str)
        self.assertEqual(model["context_length"], expected[0].context_length)

    def check_usage(self, usage, prompt_tokens, completion_tokens):
        self.assertEqual(usage["prompt_tokens"], prompt_tokens)
        self.assertEqual(usage["completion_tokens"], completion_tokens)
        self.assertEqual(usage["total_tokens"], prompt_tokens + completion_tokens)

    def test_completion_of_token_ids_equals_the_grpc_answer(self):
        body = {"prompt": [3, 17, 42], "max_tokens": 12, "temperature": 0,
                "return_token_ids": True}
        reply = self.post("/v1/completions", body)
        self.assertEqual(reply.status, 200, reply.json)
        expected = self.api.complete(grpc_request(body))
        answer = reply.json
        self.assertTrue(answer["id"].startswith("cmpl-"))
        self.assertEqual(answer["object"], "text_completion")
        self.assertIsInstance(answer["created"], int)
        self.assertEqual(answer["model"], expected.model)
        (choice,) = answer["choices"]
        self.assertEqual(choice["index"], 0)
        self.assertEqual(choice["token_ids"], list(expected.token_ids))
        self.assertEqual(choice["text"], expected.text)
        self.assertIsNone(choice["logprobs"])
        self.assertEqual(choice["finish_reason"], FINISH[expected.finish_reason])
        self.check_usage(answer["usage"], 3, len(expected.token_ids))

    def test_text_prompt_with_a_stop_string_equals_the_grpc_answer(self):
        body = {"prompt": "hello tokens", "max_tokens": 40, "temperature": 0}
        full = self.post("/v1/completions", body).json["choices"][0]["text"]
        self.assertGreater(len(full), 3)
        body["stop"] = [full[2:4], "never seen"]
        reply = self.post("/v1/completions", body)
        expected = self.api.complete(grpc_request(body))
        self.assertEqual(reply.json["choices"][0]["text"], expected.text)
        self.assertEqual(reply.json["choices"][0]["text"], full[:full.index(full[2:4])])
        self.assertEqual(reply.json["choices"][0]["finish_reason"], "stop")
        self.check_usage(reply.json["usage"], expected.usage.prompt_tokens,
                         expected.usage.completion_tokens)

    def test_sampling_fields_reach_the_sampler_as_over_grpc(self):
        body = {"prompt": [5, 9, 11], "max_tokens": 16, "temperature": 0.9, "top_p": 0.9,
                "top_k": 40, "seed": 1234, "ignore_eos": True, "return_token_ids": True}
        reply = self.post("/v1/completions", body)
        self.assertEqual(reply.status, 200, reply.json)
        expected = self.api.complete(grpc_request(body))
        self.assertEqual(reply.json["choices"][0]["token_ids"], list(expected.token_ids))
        self.assertEqual(len(expected.token_ids), 16)

    def stream(self, path, body, port=None, headers=None):
        reply = self.post(path, dict(body, stream=True), port=port, headers=headers)
        self.assertEqual(reply.status, 200, reply.json)
        self.assertTrue(reply.content_type.startswith("text/event-stream"), reply.content_type)
        self.assertEqual(reply.events[-1], "[DONE]")
        self.assertNotIn("[DONE]", reply.events[:-1])
        return reply.events[:-1]

    def test_streamed_completion_adds_up_to_the_unary_answer(self):
        body = {"prompt": "hello world", "max_tokens": 24, "temperature": 0,
                "return_token_ids": True}
        unary = self.post("/v1/completions", body).json
        chunks = self.stream("/v1/completions", body)
        self.assertEqual(len({c["id"] for c in chunks}), 1)
        for c in chunks:
            self.assertTrue(c["id"].startswith("cmpl-"))
            self.assertEqual(c["object"], "text_completion")
            self.assertEqual(len(c["choices"]), 1)
        self.assertEqual("".join(c["choices"][0]["text"] for c in chunks),
                         unary["choices"][0]["text"])
        self.assertEqual([t for c in chunks for t in c["choices"][0]["token_ids"]],
                         unary["choices"][0]["token_ids"])
        self.assertTrue(all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1]))
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"],
                         unary["choices"][0]["finish_reason"])
        self.assertEqual(chunks[-1]["usage"], unary["usage"])

    def chat_body(self, **extra):
        body = {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Hello world"}],
                "max_tokens": 16, "temperature": 0, "return_token_ids": True}
        body.update(extra)
        return body

    def test_chat_completion_equals_the_grpc_answer(self):
        body = self.chat_body()
        reply = self.post("/v1/chat/completions", body)
        self.assertEqual(reply.status, 200, reply.json)
        expected = self.api.complete(grpc_request(body, chat=True))
        answer = reply.json
        self.assertTrue(answer["id"].startswith("chatcmpl-"))
        self.assertEqual(answer["object"], "chat.completion")
        (choice,) = answer["choices"]
        self.assertEqual(choice["message"]["role"], "assistant")
        self.assertEqual(choice["message"]["content"], expected.text)
        self.assertEqual(choice["message"].get("reasoning_content", ""),
                         expected.reasoning_content)
        if self.api.list_models().models[0].reasoning:
            self.assertIn("reasoning_content", choice["message"])
        self.assertEqual(choice["token_ids"], list(expected.token_ids))
        self.assertEqual(choice["finish_reason"], FINISH[expected.finish_reason])
        self.check_usage(answer["usage"], expected.usage.prompt_tokens, len(expected.token_ids))

    def test_streamed_chat_adds_up_to_the_unary_answer(self):
        body = self.chat_body()
        unary = self.post("/v1/chat/completions", body).json["choices"][0]
        chunks = self.stream("/v1/chat/completions", body)
        for c in chunks:
            self.assertTrue(c["id"].startswith("chatcmpl-"))
            self.assertEqual(c["object"], "chat.completion.chunk")
        deltas = [c["choices"][0]["delta"] for c in chunks]
        self.assertEqual(deltas[0]["role"], "assistant")
        self.assertEqual("".join(d.get("content") or "" for d in deltas),
                         unary["message"]["content"])
        self.assertEqual("".join(d.get("reasoning_content") or "" for d in deltas),
                         unary["message"].get("reasoning_content", ""))
        self.assertEqual([t for c in chunks for t in c["choices"][0]["token_ids"]],
                         unary["token_ids"])
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], unary["finish_reason"])

    def test_include_usage_sends_usage_in_a_last_chunk_without_choices(self):
        body = {"prompt": [7, 8], "max_tokens": 5, "temperature": 0, "ignore_eos": True,
                "stream_options": {"include_usage": True}}
        chunks = self.stream("/v1/completions", body)
        self.assertEqual(chunks[-1]["choices"], [])
        self.check_usage(chunks[-1]["usage"], 2, 5)
        self.assertTrue(all(c["usage"] is None for c in chunks[:-1]))
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "length")

    def test_logprobs_are_the_grpc_logprobs_in_openai_shapes(self):
        body = {"prompt": [3, 4, 5], "max_tokens": 6, "temperature": 0, "logprobs": 2,
                "ignore_eos": True}
        expected = self.api.complete(grpc_request(body))
        lp = self.post("/v1/completions", body).json["choices"][0]["logprobs"]
        self.assertEqual(lp["tokens"], [x.token for x in expected.logprobs])
        for got, want in zip(lp["token_logprobs"], expected.logprobs):
            self.assertAlmostEqual(got, want.logprob, places=5)
        self.assertEqual([sorted(d) for d in lp["top_logprobs"]],
                         [sorted({t.token for t in x.top}) for x in expected.logprobs])
        body = self.chat_body(logprobs=True, top_logprobs=2, max_tokens=4)
        expected = self.api.complete(grpc_request(body, chat=True))
        content = self.post("/v1/chat/completions", body).json["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), len(expected.logprobs))
        for got, want in zip(content, expected.logprobs):
            self.assertEqual(got["token"], want.token)
            self.assertAlmostEqual(got["logprob"], want.logprob, places=5)
            self.assertEqual(bytes(got["bytes"]), want.token.encode())
            self.assertEqual([t["token"] for t in got["top_logprobs"]], [t.token for t in want.top])

    def test_shape_errors_are_400_naming_the_field(self):
        cases = [
            ("/v1/completions", b'{"prompt": "x", ', "body"),
            ("/v1/completions", b'["x"]', "body"),
            ("/v1/completions", b'{"prompt": "x", "max_tokens": "7"}', "max_tokens"),
            ("/v1/completions", b'{"prompt": "x", "max_tokens": -1}', "max_tokens"),
            ("/v1/completions", b'{"prompt": "x", "stream": "yes"}', "stream"),
            ("/v1/completions", b'{"prompt": [1, "two"]}', "prompt[1]"),
            ("/v1/completions", b'{"max_tokens": 3}', "prompt"),
            ("/v1/completions", b'{"prompt": "x", "max_token": 3}', "max_token"),
            ("/v1/completions", b'{"prompt": "x", "n": 2}', "n"),
            ("/v1/chat/completions", b'{"messages": "hi"}', "messages"),
            ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}',
             "messages[0].content"),
            # Invalid UTF-8 in a string, and a lone surrogate escape.
            ("/v1/completions", b'{"prompt": "ab\xff\xfe"}', "prompt"),
            ("/v1/chat/completions",
             b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}', "messages[0].content"),
            ("/v1/completions", b'{"prompt": "x", "stop": ["ok", "\\ud800"]}', "stop[1]"),
        ]
        for path, body, field in cases:
            with self.subTest(body=body):
                error = self.assert_error(self.post(path, body), 400, param=field)
                self.assertTrue(error["message"].startswith(field + ": "), error)
                self.assertEqual(error["type"], "invalid_request_error")
                self.assertNotIn("\ufffd", error["message"])

    def test_validation_errors_are_the_grpc_errors_renamed(self):
        # (endpoint, body, gRPC's field, OpenAI's field, HTTP status)
        cases = [
            ("completions", {"prompt": [1], "max_tokens": 4, "temperature": 3},
             "sampling.temperature", "temperature", 400),
            ("completions", {"prompt": [1], "max_tokens": 4, "top_p": 1.5},
             "sampling.top_p", "top_p", 400),
            ("completions", {"prompt": [1, 512], "max_tokens": 4}, "tokens.ids[1]", "prompt[1]",
             400),
            ("completions", {"prompt": [1] * 2500, "max_tokens": 100}, "sampling.max_tokens",
             "max_tokens", 400),
            ("completions", {"prompt": [1], "max_tokens": 4, "stop": [""]}, "sampling.stop[0]",
             "stop[0]", 400),
            ("completions", {"prompt": "", "max_tokens": 4}, "text", "prompt", 400),
            ("chat", {"messages": [{"role": "robot", "content": "hi"}], "max_tokens": 4},
             "chat.messages[0].role", "messages[0].role", 400),
            ("chat", {"messages": [], "max_tokens": 4}, "chat.messages", "messages", 400),
            ("completions", {"prompt": [1], "max_tokens": 4, "model": "gpt-nothing"}, "model",
             "model", 404),
        ]
        for endpoint, body, grpc_field, field, status in cases:
            with self.subTest(field=field):
                chat = endpoint == "chat"
                with self.assertRaises(grpc.RpcError) as caught:
                    self.api.complete(grpc_request(body, chat=chat))
                details = caught.exception.details()
                self.assertTrue(details.startswith(grpc_field + ": "), details)
                path = "/v1/chat/completions" if chat else "/v1/completions"
                for stream in (False, True):
                    reply = self.post(path, dict(body, stream=stream))
                    self.assert_error(reply, status, param=field,
                                      message=field + details[len(grpc_field):])
        error = self.assert_error(self.post("/v1/completions", {"prompt": [1], "model": "x"}), 404)
        self.assertEqual(error["code"], "model_not_found")

    def test_unknown_routes_are_404_in_openai_shape(self):
        self.assert_error(request(self.port, "GET", "/v1/engines"), 404)
        self.assert_error(request(self.port, "POST", "/v2/completions", {"prompt": "x"}), 404)

    def wait_metric(self, port, name, value, timeout_s=30):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if metric(scrape(port), name) == value:
                return
            time.sleep(0.05)
        self.fail("%s never reached %s" % (name, value))

    def test_a_full_admission_queue_is_429_and_a_deadline_in_the_queue_504(self):
        router = self.queueing
        port = router.ports["http"]
        body = {"prompt": [1, 2], "max_tokens": 4}
        first = {}
        waiting = threading.Thread(
            target=lambda: first.update(reply=self.post("/v1/completions", body, port=port)))
        waiting.start()
        try:
            # No worker: the first request waits in the queue, holding the only admission slot.
            self.wait_metric(router.ports["metrics"], "epinfer_router_requests_waiting", 1)
            for stream in (False, True):
                error = self.assert_error(
                    self.post("/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "hi"}], "stream": stream},
                              port=port), 429)
                self.assertEqual(error["type"], "rate_limit_error")
                self.assertIsNone(error["param"])
        finally:
            waiting.join(timeout=60)
        # --http_timeout_s=5 ends it in the queue.
        self.assert_error(first["reply"], 504)

    def test_no_serving_group_is_503(self):
        port = self.no_group.ports["http"]
        for stream in (False, True):
            error = self.assert_error(
                self.post("/v1/completions", {"prompt": [1], "stream": stream}, port=port), 503)
            self.assertEqual(error["type"], "server_error")

    CANCELLED = 'epinfer_router_requests_total{code="CANCELLED",method="http_completions"}'

    def open_long_request(self, stream):
        """A request that would run for thousands of tokens, on a connection of its own."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"prompt": [3, 4, 5], "max_tokens": 2400, "ignore_eos": True,
                                      "temperature": 0, "stream": stream}).encode())
        return conn

    def assert_cancelled_and_freed(self, cancelled_before):
        self.wait_metric(self.cluster.metrics_port, self.CANCELLED, cancelled_before + 1)
        self.cluster.assert_blocks_freed(self)

    def wait_running(self, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(client.worker_info(self.cluster.worker_address(i)).running_sequences > 0
                   for i in range(2)):
                return
            time.sleep(0.02)
        self.fail("the request never reached a worker")

    def test_a_client_that_leaves_a_stream_cancels_it_and_frees_its_blocks(self):
        before = metric(self.cluster.metrics(), self.CANCELLED)
        conn = self.open_long_request(stream=True)
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        events = 0
        while events < 3:
            if response.readline().startswith(b"data:"):
                events += 1
        response.close()
        conn.close()
        self.assert_cancelled_and_freed(before)

    def test_a_client_that_leaves_a_unary_request_cancels_it_and_frees_its_blocks(self):
        before = metric(self.cluster.metrics(), self.CANCELLED)
        conn = self.open_long_request(stream=False)
        self.wait_running()
        conn.close()
        self.assert_cancelled_and_freed(before)

    def test_metrics_count_http_requests_and_the_tokens_clients_received(self):
        before = self.cluster.metrics()
        received = 0
        for i in range(2):
            reply = self.post("/v1/chat/completions", self.chat_body(max_tokens=5 + i))
            received += reply.json["usage"]["completion_tokens"]
        chunks = self.stream("/v1/completions", {"prompt": [9, 10], "max_tokens": 4,
                                                 "temperature": 0})
        received += chunks[-1]["usage"]["completion_tokens"]
        self.assert_error(self.post("/v1/chat/completions", {"messages": 1}), 400)
        request(self.port, "GET", "/v1/models")
        after = self.cluster.metrics()

        def delta(name):
            return metric(after, name) - metric(before, name)

        self.assertEqual(delta('epinfer_router_requests_total{code="OK",'
                               'method="http_chat_completions"}'), 2)
        self.assertEqual(delta('epinfer_router_requests_total{code="OK",'
                               'method="http_completions"}'), 1)
        self.assertEqual(delta('epinfer_router_requests_total{code="INVALID_ARGUMENT",'
                               'method="http_chat_completions"}'), 1)
        self.assertEqual(delta('epinfer_router_requests_total{code="OK",method="http_models"}'),
                         1)
        self.assertEqual(delta("epinfer_router_generation_tokens_total"), received)

    def test_the_api_key_guards_http(self):
        port = self.secure.http_port
        body = {"prompt": [3, 17, 42], "max_tokens": 8, "temperature": 0, "return_token_ids": True}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                        {"Authorization": "Bearer " + API_KEY + "x"}):
            with self.subTest(headers=headers):
                error = self.assert_error(self.post("/v1/completions", body, port=port,
                                                    headers=headers), 401)
                self.assertEqual(error["type"], "authentication_error")
                self.assert_error(request(port, "GET", "/v1/models", headers=headers), 401)
        auth = {"Authorization": "Bearer " + API_KEY}
        self.assertEqual(request(port, "GET", "/v1/models", headers=auth).status, 200)
        reply = self.post("/v1/completions", body, port=port, headers=auth)
        self.assertEqual(reply.status, 200, reply.json)
        # The same answer as the plaintext cluster's gRPC API (same model, greedy).
        self.assertEqual(reply.json["choices"][0]["token_ids"],
                         list(self.api.complete(grpc_request(body)).token_ids))
        chunks = self.stream("/v1/completions", body, port=port, headers=auth)
        self.assertEqual([t for c in chunks for t in c["choices"][0]["token_ids"]],
                         reply.json["choices"][0]["token_ids"])

    def test_the_api_key_guards_grpc(self):
        api = client.Completions(self.secure.address, credentials=self.secure.credentials)
        try:
            for metadata in (None, [("authorization", "Bearer wrong")]):
                api.metadata = metadata
                with self.assertRaises(grpc.RpcError) as caught:
                    api.list_models()
                self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                with self.assertRaises(grpc.RpcError) as caught:
                    api.complete(client.tokens_request([1, 2], 2))
                self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            api.metadata = self.secure.metadata
            self.assertEqual(len(api.complete(client.tokens_request([1, 2], 2)).token_ids), 2)
        finally:
            api.close()

    def test_tls_clients_connect_and_plaintext_clients_fail(self):
        prompt = [3, 17, 42]
        expected = list(self.api.complete(client.tokens_request(prompt, 10)).token_ids)
        api = self.secure.api()
        try:
            self.assertEqual(list(api.complete(client.tokens_request(prompt, 10)).token_ids),
                             expected)
        finally:
            api.close()
        plain = client.Completions(self.secure.address, metadata=self.secure.metadata)
        try:
            with self.assertRaises(grpc.RpcError) as caught:
                plain.list_models(timeout_s=10)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        finally:
            plain.close()
        args = ["complete", "--target=" + self.secure.address, "--api_key=" + API_KEY,
                "--tokens=" + ",".join(map(str, prompt)), "--max-tokens=10", "--print-ids",
                "--timeout_s=60"]
        code, out, err = epinfer(*args, "--tls_ca=" + self.pki("ca.pem"))
        self.assertEqual(code, 0, err)
        self.assertEqual([int(t) for t in out.strip().splitlines()[-1].split(",")], expected)
        code, out, err = epinfer(*args, "--timeout_s=10")
        self.assertNotEqual(code, 0, out)
        # A CA that did not sign the server's certificate: the handshake fails.
        code, out, err = epinfer(*args, "--tls_ca=" + self.pki("rogue_ca.pem"), "--timeout_s=10")
        self.assertNotEqual(code, 0, out)

    def test_mtls_admits_only_clients_with_a_certificate_from_the_client_ca(self):
        address = "127.0.0.1:%d" % self.mtls.ports["grpc"]

        def list_models(**keys):
            credentials = grpc.ssl_channel_credentials(root_certificates=self.ca, **keys)
            api = client.Completions(address, credentials=credentials)
            try:
                return api.list_models(timeout_s=10)
            finally:
                api.close()

        models = list_models(private_key=read(self.pki("client.key")),
                             certificate_chain=read(self.pki("client.pem")))
        self.assertEqual(models.models[0].id, self.api.list_models().models[0].id)
        for keys in ({}, {"private_key": read(self.pki("rogue_client.key")),
                          "certificate_chain": read(self.pki("rogue_client.pem"))}):
            with self.subTest(client_cert=bool(keys)):
                with self.assertRaises(grpc.RpcError) as caught:
                    list_models(**keys)
                self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_sigterm_lets_a_stream_finish_then_stops_the_http_port(self):
        cluster = Cluster(self.model, workers=1,
                          router_flags=["--http_port=0", "--drain_timeout_s=60"])
        self.processes.append(cluster)
        conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=60)
        conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"prompt": [3, 4], "max_tokens": 400, "ignore_eos": True,
                                      "stream": True}).encode())
        response = conn.getresponse()
        first = response.readline()
        self.assertTrue(first.startswith(b"data:"), first)
        cluster.router.proc.terminate()
        events = read_sse([first] + list(response))
        conn.close()
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(events[-2]["usage"]["completion_tokens"], 400)
        self.assertEqual(cluster.router.wait(timeout_s=60), 0)
        with self.assertRaises(OSError):
            request(cluster.http_port, "GET", "/v1/models", timeout_s=5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
