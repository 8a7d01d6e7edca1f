"""A local epinfer cluster for end-to-end tests: the tiny model (with its tokenizer) and a router
with N workers on 127.0.0.1, each a real process started through procs."""
import os
import re
import time
import urllib.request

import grpc

import epinfer_client as client
import procs

CORPUS = ("epinfer serves DeepSeek models with expert parallelism. The router streams tokens; "
          "workers exchange activations over UCX. Hello world, hello tokens! 12345 67890.\n") * 40


def epinfer(*args, timeout_s=300):
    """Runs `epinfer ARGS`: (exit code, stdout, stderr)."""
    return procs.run([procs.runfile("cli/epinfer")] + [str(a) for a in args], timeout_s=timeout_s)


def make_tiny_model(tmp):
    """The tiny preset with a tokenizer trained on CORPUS, in tmp/tiny; returns its path."""
    model = os.path.join(tmp, "tiny")
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(CORPUS)
    code, _, err = epinfer("make-model", "--preset=tiny", "--dtype=bf16", "--seed=3",
                           "--out=" + model, "--tokenizer-corpus=" + corpus)
    assert code == 0, err
    return model


def start_router(model, workers, router_flags=()):
    """A router expecting `workers` workers (none started here); its ports are in .ports."""
    router = procs.Process([
        procs.runfile("cli/epinfer"), "router", "--model=" + model, "--workers=%d" % workers,
        "--bind=127.0.0.1", "--port=0", "--cluster_port=0", "--metrics_port=0",
        "--heartbeat_interval_ms=200", "--group_settle_ms=1000", "--queue_timeout_s=20",
        "--drain_timeout_s=2"] + list(router_flags))
    router.wait_listening()
    return router


def metric(text, name):
    """The value of the sample `name` (with its labels, if any) in Prometheus text; 0 if absent."""
    match = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(match.group(1)) if match else 0.0


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as response:
        return response.read().decode()


class Cluster:
    """A router and N workers on 127.0.0.1, each a real process. `credentials` and `metadata`
    are what a gRPC client of this router needs (TLS, API key)."""

    def __init__(self, model, workers=2, router_flags=(), credentials=None, metadata=None):
        self.model = model
        self.credentials = credentials
        self.metadata = metadata
        self.router = start_router(model, workers, router_flags)
        ports = self.router.ports
        self.address = "127.0.0.1:%d" % ports["grpc"]
        self.cluster_address = "127.0.0.1:%d" % ports["cluster"]
        self.metrics_port = ports["metrics"]
        self.http_port = ports.get("http")
        self.workers = [self.start_worker(i) for i in range(workers)]
        self.wait_ranks(workers)

    def start_worker(self, i):
        p = procs.Process([
            procs.runfile("cli/epinfer"), "worker", "--model=" + self.model,
            "--router=" + self.cluster_address, "--worker_id=worker-%d" % i, "--bind=127.0.0.1",
            "--port=0", "--metrics_port=0", "--threads=1", "--kv_cache_mb=64",
            "--drain_timeout_s=2", "--collective_timeout_s=10"])
        p.ports = p.wait_listening()
        return p

    def worker_address(self, i):
        return "127.0.0.1:%d" % self.workers[i].ports["grpc"]

    def api(self):
        return client.Completions(self.address, metadata=self.metadata,
                                  credentials=self.credentials)

    def wait_ranks(self, n, timeout_s=60):
        """Waits until the router serves a group of n ranks and every live worker runs in it with
        its experts loaded (a worker joins the group before it loads them)."""
        api = self.api()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    if api.list_models().models[0].num_ranks == n and all(
                            client.worker_info(self.worker_address(i)).world_size == n
                            for i, w in enumerate(self.workers) if w.proc.poll() is None):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        finally:
            api.close()
        raise TimeoutError("no serving group of %d ranks:\n%s" % (n, self.router.output()))

    def assert_blocks_freed(self, test, timeout_s=15):
        """Fails `test` unless every worker's KV blocks are free and nothing runs, in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            infos = [client.worker_info(self.worker_address(i)) for i in range(len(self.workers))]
            if all(i.kv_cache.blocks_free == i.kv_cache.blocks_total and i.running_sequences == 0
                   for i in infos):
                return
            time.sleep(0.05)
        test.fail("KV blocks not freed: %s" % infos)

    def metrics(self):
        return scrape(self.metrics_port)

    def stop(self):
        for p in self.workers + [self.router]:
            p.kill()
