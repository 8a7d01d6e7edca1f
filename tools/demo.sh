#!/usr/bin/env bash
# The main job: installs what is missing, builds everything, starts router, scheduler and a
# worker on 127.0.0.1, checks that each answers its gRPC health check and /metrics, and stops
# them with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
bazel build //...
exec /usr/bin/python3 tools/demo.py
