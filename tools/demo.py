"""Starts the three epinfer servers on loopback, checks them as an operator would, stops them."""
import os
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
import grpc_raw  # noqa: E402
import procs  # noqa: E402

LOCAL = ["--bind=127.0.0.1", "--port=0", "--metrics_port=0"]


def main():
    epinfer = procs.runfile("cli/epinfer")
    started = []
    try:
        for component, extra in (("router", ["--cluster_port=0"]), ("scheduler", []),
                                 ("worker", [])):
            p = procs.Process([epinfer, component] + LOCAL + extra)
            started.append((component, p))
            ports = p.wait_listening(timeout_s=60)
            health = grpc_raw.health_check("127.0.0.1:%d" % ports["grpc"])
            url = "http://127.0.0.1:%d/metrics" % ports["metrics"]
            with urllib.request.urlopen(url, timeout=5) as response:
                series = sum(1 for line in response.read().decode().splitlines()
                             if line and not line.startswith("#"))
            print("%-9s grpc=127.0.0.1:%-5d health=%s  metrics=%s (%d series)" %
                  (component, ports["grpc"], health, url, series))
            if health != "SERVING":
                raise SystemExit("%s is not serving" % component)
        for component, p in reversed(started):
            code = p.terminate(timeout_s=30)
            print("%-9s stopped on SIGTERM, exit code %d" % (component, code))
            if code != 0:
                raise SystemExit("%s exited with %d:\n%s" % (component, code, p.output()))
    finally:
        for _, p in started:
            p.kill()
    print("demo: ok")


if __name__ == "__main__":
    main()
