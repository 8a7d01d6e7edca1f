"""Starts epinfer processes for tests: the one way tests launch them.

Every wait has a deadline; every process started is killed when the test ends.
"""
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

LISTEN_RE = re.compile(r"(\w+) listening((?: \w+=[^ \n]+)+)")


def runfile(path):
    """Absolute path of a runfile (workspace-relative), under `bazel test` or from the tree."""
    for root in (os.environ.get("TEST_SRCDIR"), os.environ.get("RUNFILES_DIR")):
        if root:
            candidate = os.path.join(root, "epinfer", path)
            if os.path.exists(candidate):
                return candidate
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "..", "..", "bazel-bin", path),
                      os.path.join(here, "..", "..", path)):
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(path)


class Process:
    """A child process whose stderr is captured to a file and scanned for the listening line."""

    def __init__(self, argv, env=None):
        self.argv = list(argv)
        self.log = tempfile.NamedTemporaryFile(prefix="epinfer-", suffix=".log", delete=False,
                                               dir=os.environ.get("TEST_TMPDIR"))
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.ports = {}

    def output(self):
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def wait_listening(self, timeout_s=60):
        """Waits for "<component> listening name=host:port ..." and returns {name: port}."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = LISTEN_RE.search(self.output())
            if match:
                for item in match.group(2).split():
                    name, address = item.split("=", 1)
                    self.ports[name] = int(address.rsplit(":", 1)[1])
                return self.ports
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %d before listening:\n%s" %
                                   (self.argv[0], self.proc.returncode, self.output()))
            time.sleep(0.05)
        raise TimeoutError("%s did not listen within %ss:\n%s" %
                           (self.argv[0], timeout_s, self.output()))

    def wait(self, timeout_s):
        """Exit code, or raises TimeoutError (and kills the process) past the deadline."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError("%s still running after %ss:\n%s" %
                               (self.argv[0], timeout_s, self.output()))

    def terminate(self, timeout_s=30):
        """SIGTERM, then the exit code (SIGKILL past the deadline)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        os.unlink(self.log.name)


def run(argv, timeout_s=60, env=None):
    """Runs a command to completion: (exit code, stdout, stderr)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
    return done.returncode, done.stdout, done.stderr
