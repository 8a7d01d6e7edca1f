#!/usr/bin/python3
"""Deployment files are valid: Prometheus config and rules pass promtool, every kustomization
names files that exist and parse, and every container runs a real `epinfer` subcommand whose
flags the binary accepts."""
import os
import subprocess
import sys
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
import procs  # noqa: E402


def kustomizations():
    for root, _, files in os.walk(os.path.join(HERE, "k8s")):
        if "kustomization.yaml" in files:
            yield root


class DeployTest(unittest.TestCase):

    def test_prometheus_config_and_rules_pass_promtool(self):
        for what, name in (("config", "prometheus.yml"), ("rules", "alerts.yml")):
            done = subprocess.run(["promtool", "check", what,
                                   os.path.join(HERE, "prometheus", name)],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_kustomizations_reference_existing_parseable_files(self):
        for root in kustomizations():
            with open(os.path.join(root, "kustomization.yaml")) as f:
                k = yaml.safe_load(f)
            for resource in k.get("resources", []):
                path = os.path.join(root, resource)
                self.assertTrue(os.path.exists(path), path)
                if os.path.isfile(path):
                    with open(path) as f:
                        docs = [d for d in yaml.safe_load_all(f) if d]
                    self.assertTrue(docs, path)

    def test_container_args_are_accepted_by_the_binary(self):
        epinfer = procs.runfile("cli/epinfer")
        for name in os.listdir(os.path.join(HERE, "k8s", "base")):
            if name in ("kustomization.yaml", "podmonitor.yaml"):
                continue
            with open(os.path.join(HERE, "k8s", "base", name)) as f:
                for doc in yaml.safe_load_all(f):
                    if not doc or doc.get("kind") not in ("Deployment", "StatefulSet"):
                        continue
                    for c in doc["spec"]["template"]["spec"]["containers"]:
                        # --help parses nothing else, so ask the flag parser with the real
                        # args and a port that cannot bind twice: usage errors exit 2.
                        code, out, err = procs.run([epinfer] + c["args"] + ["--help"], 30)
                        self.assertEqual(code, 0, err)
                        for arg in c["args"][1:]:
                            flag = arg.split("=", 1)[0]
                            self.assertIn(flag, out, "%s: %s is not a flag" % (name, flag))


if __name__ == "__main__":
    unittest.main(verbosity=2)
