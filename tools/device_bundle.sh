#!/bin/bash
# Builds the programs that need a GPU machine, and what they need to run there, into
# .device/bundle.tar.xz (git-ignored), for tools/device_check.sh to run on a lent GPU machine
# that has no Bazel and none of this project's Debian libraries. Inside:
#   epinfer/...   -c opt binaries, laid out as Bazel runfiles (RUNFILES_DIR=the bundle)
#   bin           ucx_perftest, ucx_info
#   lib           every shared library they load except the C library's own, the CUDA driver,
#                 cudart and NCCL (taken from the GPU machine's CUDA install); lib/ucx holds
#                 UCX's loadable transport modules.
#   tools/device_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(//cli:epinfer //worker/comm:dispatch_bench //worker/comm:nccl_test)
# --dynamic_mode=off: tests too link the project's libraries statically, not as .so files.
bazel build -c opt --dynamic_mode=off "${TARGETS[@]}" >&2
BIN=$(bazel info -c opt --dynamic_mode=off bazel-bin 2>/dev/null)
rm -rf .device
mkdir -p .device/epinfer/cli .device/epinfer/worker/comm .device/bin .device/lib/ucx
strip -o .device/epinfer/cli/epinfer "$BIN/cli/epinfer"
strip -o .device/epinfer/worker/comm/dispatch_bench "$BIN/worker/comm/dispatch_bench"
strip -o .device/epinfer/worker/comm/nccl_test "$BIN/worker/comm/nccl_test"
cp "$(command -v ucx_perftest)" "$(command -v ucx_info)" .device/bin/
UCX_MODULES=$(dirname "$(readlink -f "$(ldconfig -p | awk '/libucs.so.0 /{print $NF; exit}')")")/ucx
cp -L "$UCX_MODULES"/libuct_cma.so.0 .device/lib/ucx/
# Shared libraries, except those the GPU machine must provide itself.
SKIP='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libresolv\.|libcuda\.|libcudart\.|libnccl\.)'
for program in .device/epinfer/cli/epinfer .device/epinfer/worker/comm/* .device/bin/* \
               .device/lib/ucx/*; do
  ldd "$program" | awk '$2 == "=>" {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "$name" =~ $SKIP ]] && continue
  [[ "$path" == /* ]] || { echo "$name: not found by ldd" >&2; exit 1; }
  cp -L "$path" ".device/lib/$name"
done
# The newest C library symbol version any of them needs (the GPU machine's glibc must be as new).
for f in .device/epinfer/cli/epinfer .device/epinfer/worker/comm/* .device/bin/* .device/lib/*.so* \
         .device/lib/ucx/*; do
  objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' || true
done | sort -uV | tail -1 | sed 's/^/needs /' >&2
tar -cJf .device/bundle.tar.xz --exclude=bundle.tar.xz -C .device epinfer bin lib
rm -rf .device/epinfer .device/bin .device/lib
du -h .device/bundle.tar.xz >&2
