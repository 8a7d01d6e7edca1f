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
        """Every `args` list in the manifests and overlay patches names a real subcommand whose
        --help lists each flag it passes."""
        epinfer = procs.runfile("cli/epinfer")

        def arg_lists(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "args" and isinstance(value, list) and value:
                        yield value
                    else:
                        yield from arg_lists(value)
            elif isinstance(node, list):
                for item in node:
                    yield from arg_lists(item)

        checked = 0
        for root, _, files in os.walk(os.path.join(HERE, "k8s")):
            for name in files:
                if not name.endswith(".yaml") or name == "kustomization.yaml":
                    continue
                with open(os.path.join(root, name)) as f:
                    docs = list(yaml.safe_load_all(f))
                for args in arg_lists(docs):
                    code, out, err = procs.run([epinfer, args[0], "--help"], 30)
                    self.assertEqual(code, 0, "%s: %s %s" % (name, args[0], err))
                    for arg in args[1:]:
                        # Dashes in flag names read as underscores (--max-tokens = --max_tokens).
                        flag = "--" + arg.split("=", 1)[0].lstrip("-").replace("-", "_")
                        self.assertIn(flag + " ", out,
                                      "%s: %s is not a flag of %s" % (name, flag, args[0]))
                    checked += 1
        self.assertGreaterEqual(checked, 4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
