#!/usr/bin/env bash
# Installs every Debian package epinfer needs to build, test and run the demo.
# Idempotent: it asks apt only for what is missing, so a second run costs a dpkg query.
set -euo pipefail

packages=(
  # build
  bazel-bootstrap g++ clang libclang-rt-14-dev
  # wire contracts and RPC
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libgrpc-dev libabsl-dev
  # transport, metrics, logging, formats
  libucx-dev ucx-utils prometheus-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libre2-dev
  libcpp-httplib-dev libssl-dev
  # CPU math
  libopenblas-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3 python3-numpy python3-grpcio python3-protobuf
  prometheus python3-yaml curl nodejs npm openssl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # nodejs from another source (NodeSource) also provides npm.
    if [[ "$p" == npm ]] && command -v npm >/dev/null; then continue; fi
    if [[ "$p" == nodejs ]] && command -v node >/dev/null; then continue; fi
    missing+=("$p")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "setup: done" >&2
fi

# The tokenizer tests' JavaScript reference (npm, pinned by tests/tokenizer/package-lock.json).
# --ignore-scripts: onnxruntime-node's postinstall downloads binaries the tokenizer never uses.
# A stamp holding the lock file's hash makes a second run a no-op.
reference_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/tokenizer"
stamp="$reference_dir/node_modules/.epinfer-lock-sha256"
lock_hash=$(sha256sum "$reference_dir/package-lock.json" | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_hash" ]]; then
  echo "setup: installing the tokenizer reference (npm ci)" >&2
  (cd "$reference_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_hash" >"$stamp"
fi
