#!/bin/bash
# The checks that need a GPU machine, run there over the bundle tools/device_bundle.sh made here
# (carry .device). Results go to $OUT (the device tool's folder) or /tmp/device_out.
#   1. //worker/comm:nccl_test: the communicator conformance suite over NCCL, and a peer that
#      never joins failing initialisation at its deadline;
#   2. tests/ep_test.py's NCCL case: `epinfer forward --transport nccl` gives the single-rank
#      logits;
#   3. tools/bench_ep.sh --threads N (default 4): the EP speed benchmark with several cores per
#      rank, which this project's 2-core development machine cannot give.
#   tools/device_check.sh [--threads N] [--skip-bench] [-- BENCH_EP_FLAGS...]
#     (PYTHON: a python3 with numpy; flags after -- go to tools/bench_ep.sh, e.g. --lanes 8)
set -uo pipefail
cd "$(dirname "$0")/.."
THREADS=4
BENCH=1
while (( $# )); do
  case "$1" in
    --threads) THREADS=$2; shift ;;
    --skip-bench) BENCH=0 ;;
    --) shift; break ;;
    *) echo "usage: tools/device_check.sh [--threads N] [--skip-bench] [-- BENCH_EP_FLAGS]" >&2
       exit 2 ;;
  esac
  shift
done
RESULTS=${OUT:-/tmp/device_out}
mkdir -p "$RESULTS"
B=/tmp/epinfer-bundle
rm -rf "$B" && mkdir -p "$B" && tar -xJf .device/bundle.tar.xz -C "$B" || exit 1
# NCCL and cudart from the GPU machine's own CUDA (a CUDA install or the Python wheels).
CUDA_LIBS=$(find /usr/local /opt /usr/lib -name 'libnccl.so.2' -o -name 'libcudart.so.1[0-9]' \
              2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$B/lib:$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export UCX_MODULE_DIR="$B/lib/ucx" PATH="$B/bin:$PATH" RUNFILES_DIR="$B"
{
  date -u
  nvidia-smi -L
  echo "cores: $(nproc); $(ldd --version | head -1); CUDA libraries from: $CUDA_LIBS"
  find /usr/local /opt /usr/lib -name "libnccl.so*" 2>/dev/null | xargs -r readlink -f | sort -u
  ldd "$B/epinfer/worker/comm/nccl_test" | grep -E 'nccl|cudart|not found'
} 2>&1 | tee "$RESULTS/machine.txt"

echo "== nccl_test" | tee "$RESULTS/nccl_test.log"
NCCL_DEBUG=WARN timeout 90 "$B/epinfer/worker/comm/nccl_test" 2>&1 | tee -a "$RESULTS/nccl_test.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$RESULTS/nccl_test.log"

echo "== ep_test (NCCL)" | tee "$RESULTS/ep_test.log"
timeout 120 "${PYTHON:-python3}" tests/ep_test.py EpForwardTest.test_nccl_processes_give_the_single_rank_logits \
    2>&1 | tee -a "$RESULTS/ep_test.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$RESULTS/ep_test.log"

if (( BENCH )); then
  echo "== bench_ep --threads $THREADS" | tee "$RESULTS/bench_ep.log"
  EPINFER_BIN="$B/epinfer" timeout 300 tools/bench_ep.sh --threads "$THREADS" "$@" \
      >"$RESULTS/bench_ep.md" 2>>"$RESULTS/bench_ep.log"
  echo "exit $?" | tee -a "$RESULTS/bench_ep.log"
  cat "$RESULTS/bench_ep.md"
fi
