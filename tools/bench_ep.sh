#!/bin/bash
# Expert-parallel speed on this machine, everything in one run (docs/PERFORMANCE.md, issue 5):
#   1. ucx_perftest tag_lat and tag_bw, server + client on 127.0.0.1: the transport's own numbers;
#   2. //worker/comm:dispatch_bench: ExpertDispatcher Dispatch + Combine over UCX with 2 and 4
#      ranks, decode-sized (128 tokens/rank) and prefill-sized (4096 tokens/rank) steps, hidden
#      7168, top-8 of 256 experts, FP8 dispatch / BF16 combine;
#   3. epinfer forward --mode decode on the small preset: --ep 2 over UCX vs --ep 1.
# Prints the results as markdown rows for docs/PERFORMANCE.md.
#   tools/bench_ep.sh [--quick] [--threads N] [--lanes L] [--ranks "2 4"]
#     --quick: few iterations, to check the script itself;
#     --threads N: compute threads per EP rank (default 1: this 2-core machine's one core per
#       rank); the single-process comparisons then use N and 2N threads;
#     --lanes L: UCX lanes per rank (--comm_lanes; default 1), each driven by one of the threads;
#     --ranks: the group sizes of the dispatch benchmark (default "2 4").
#   EPINFER_BIN=DIR: run prebuilt binaries (DIR/worker/comm/dispatch_bench, DIR/cli/epinfer)
#     instead of building with Bazel, on a machine without it (tools/device_check.sh).
# UCX_NET_DEVICES=lo keeps UCX's TCP transport on loopback (shared memory and CMA are not network
# devices). The communicator's endpoints ask for peer failure detection, which narrows the
# transports UCX may pick; the script reads the ones it picked from UCX's debug log and runs
# ucx_perftest on exactly those (UCX_TLS), and once more on UCX's default choice for reference.
# Takes 5-8 minutes on 2 cores. (ucx_perftest's server listens on all interfaces for its setup
# connection; it has no flag to bind 127.0.0.1 alone. All traffic goes to 127.0.0.1.)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
THREADS=1
LANES=1
RANKS="2 4"
while (( $# )); do
  case "$1" in
    --quick) QUICK=1 ;;
    --threads) THREADS=$2; shift ;;
    --lanes) LANES=$2; shift ;;
    --ranks) RANKS=$2; shift ;;
    *) echo "usage: tools/bench_ep.sh [--quick] [--threads N] [--lanes L] [--ranks \"2 4\"]" >&2
       exit 2 ;;
  esac
  shift
done
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "--threads: a positive integer" >&2; exit 2; }
[[ "$LANES" =~ ^[1-9][0-9]*$ ]] || { echo "--lanes: a positive integer" >&2; exit 2; }
[[ "$RANKS" =~ ^[0-9\ ]+$ ]] || { echo "--ranks: group sizes, e.g. \"2 4\"" >&2; exit 2; }
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"
WORK=$(mktemp -d /tmp/bench_ep.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
log() { echo "$*" >&2; }

if [[ -n "${EPINFER_BIN:-}" ]]; then
  BIN=$EPINFER_BIN
else
  log "== build (bazel build -c opt)"
  bazel build -c opt //worker/comm:dispatch_bench //cli:epinfer >&2
  BIN=$(bazel info -c opt bazel-bin 2>/dev/null)
fi
BENCH="$BIN/worker/comm/dispatch_bench"
EPINFER="$BIN/cli/epinfer"
log "== $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg); UCX_TLS=${UCX_TLS:-all}" \
    "UCX_NET_DEVICES=$UCX_NET_DEVICES; $(ucx_info -v | head -1)"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# perftest TEST SIZE ITERS: the client's final line (iterations, p50 and average latency in us,
# overall latency, bandwidth average and overall in MiB/s, message rates).
perftest() {
  local test=$1 size=$2 iters=$3 port line server
  local warmup=$(( iters / 10 > 2 ? iters / 10 : 2 ))
  for attempt in 1 2 3; do
    port=$(free_port)
    ucx_perftest -p "$port" -t "$test" -s "$size" -n "$iters" -w "$warmup" >"$WORK/server.log" 2>&1 &
    server=$!
    for _ in $(seq 50); do  # until the server listens (state 0A in /proc/net/tcp*)
      if grep -qi ":$(printf '%04X' "$port") [0-9A-F:]* 0A " /proc/net/tcp /proc/net/tcp6; then
        break
      fi
      sleep 0.1
    done
    if line=$(timeout 120 ucx_perftest 127.0.0.1 -p "$port" -t "$test" -s "$size" -n "$iters" \
                -w "$warmup" -f 2>&1 | tail -1) && [[ "$line" =~ ^[[:space:]]*[0-9] ]]; then
      wait "$server" || true
      echo "$line"
      return 0
    fi
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  done
  log "ucx_perftest $test -s $size failed: $line"
  return 1
}

# tag_bw at SIZE bytes, in bytes/s: the best of 3 runs of ~0.3 GB each (the floor is what the
# transport can do; other load on the machine only ever lowers a run).
tag_bw() {
  local size=$1 iters best=0 bw
  iters=$(( 300000000 / size ))
  (( iters < 10 )) && iters=10
  (( iters > 2000 )) && iters=2000
  (( QUICK )) && iters=$(( iters / 10 > 5 ? iters / 10 : 5 ))
  for _ in 1 2 3; do
    bw=$(perftest tag_bw "$size" "$iters" | awk '{printf "%.0f", $6 * 1048576}')
    (( bw > best )) && best=$bw
  done
  echo "$best"
}

# bench SIZE TOKENS ITERS WARMUP: rank 0's RESULT line.
bench() {
  local size=$1 tokens=$2 iters=$3 warmup=$4 rendezvous="$WORK/rv.$1.$2" pids=() r
  mkdir -p "$rendezvous"
  for (( r = 0; r < size; ++r )); do
    "$BENCH" --rank=$r --size="$size" --rendezvous="$rendezvous" --tokens="$tokens" \
        --hidden=7168 --top_k=8 --experts=256 --dispatch_dtype=fp8 --combine_dtype=bf16 \
        --iters="$iters" --warmup="$warmup" --threads="$THREADS" --lanes="$LANES" \
        >"$WORK/bench.$size.$tokens.$r" 2>&1 &
    pids+=($!)
  done
  for (( r = 0; r < size; ++r )); do
    if ! wait "${pids[$r]}"; then
      log "dispatch_bench rank $r of $size failed:"; cat "$WORK/bench.$size.$tokens.$r" >&2
      return 1
    fi
  done
  grep '^RESULT' "$WORK/bench.$size.$tokens.0"
}

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# 4 random sequences of LENGTH tokens, ';'-separated.
sequences() {
  python3 -c "import random
r = random.Random(7)
print(';'.join(','.join(str(r.randrange(1, 8000)) for _ in range($1)) for _ in range(4)))"
}
# forward_seconds LENGTH ARGS...: wall seconds of one forward --mode decode run.
forward_seconds() {
  local length=$1 start end; shift
  start=$(date +%s.%N)
  "$EPINFER" forward --model "$WORK/small" --tokens "$(sequences "$length")" \
      --out "$WORK/logits" --mode decode "$@" >&2
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN {print b - a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# ---- 1. the transports the communicator's endpoints use, and ucx_perftest's latency on them
log "== transports of the communicator's endpoints"
mkdir -p "$WORK/rv.lanes"
UCX_LOG_LEVEL=debug "$BENCH" --rank=0 --size=2 --rendezvous="$WORK/rv.lanes" --tokens=8 \
    --iters=1 --warmup=1 >"$WORK/lanes.log" 2>&1 &
lanes_pid=$!
"$BENCH" --rank=1 --size=2 --rendezvous="$WORK/rv.lanes" --tokens=8 --iters=1 --warmup=1 >&2
wait "$lanes_pid"
grep 'lane\[' "$WORK/lanes.log" | sed 's/.*DEBUG *//' >&2
COMM_TLS=$(grep -o 'lane\[[0-9]*\]: *[0-9]*:[a-z_0-9]*' "$WORK/lanes.log" | sed 's/.*://' | sort -u | paste -sd,)
[[ -n "$COMM_TLS" ]] || { log "no lanes in UCX's debug log"; exit 1; }
DEFAULT_TLS=${UCX_TLS:-}
export UCX_TLS=$COMM_TLS
log "communicator transports: UCX_TLS=$UCX_TLS"
LAT_ITERS=20000
(( QUICK )) && LAT_ITERS=2000
log "== ucx_perftest tag_lat 8 B"
LAT_US=$(perftest tag_lat 8 "$LAT_ITERS" | awk '{print $2}')
log "tag_lat p50 = $LAT_US us"

# ---- 2. dispatch_bench, each followed by ucx_perftest tag_bw at its message sizes
declare -A RESULT BW_D BW_C
if (( QUICK )); then DECODE_ITERS=20; PREFILL_ITERS=2; else DECODE_ITERS=100; PREFILL_ITERS=5; fi
for size in $RANKS; do
  for tokens in 128 4096; do
    if (( tokens == 128 )); then iters=$DECODE_ITERS; warmup=10; else iters=$PREFILL_ITERS; warmup=2; fi
    log "== dispatch_bench --size=$size --tokens=$tokens --iters=$iters"
    RESULT[$size.$tokens]=$(bench "$size" "$tokens" "$iters" "$warmup")
    log "${RESULT[$size.$tokens]}"
    d_msg=$(field "${RESULT[$size.$tokens]}" dispatch_msg_bytes)
    c_msg=$(field "${RESULT[$size.$tokens]}" combine_msg_bytes)
    BW_D[$size.$tokens]=$(tag_bw "$d_msg")
    BW_C[$size.$tokens]=$(tag_bw "$c_msg")
    log "tag_bw at $d_msg B: ${BW_D[$size.$tokens]} B/s; at $c_msg B: ${BW_C[$size.$tokens]} B/s"
  done
done

# ---- 3. end to end: decode tokens/s from the wall time of 4 sequences of L2 tokens minus that of
# L1 tokens, so process start, model load and UCX wire-up cancel. The two configurations take
# turns, so that load from elsewhere on the machine falls on both; median of 3 runs each.
log "== epinfer make-model --preset small --dtype bf16"
"$EPINFER" make-model --preset small --dtype bf16 --out "$WORK/small" >&2
if (( QUICK )); then L1=4; L2=20; else L1=16; L2=144; fi
# Configurations: EP 2 (THREADS cores per rank), EP 1 on the same cores, EP 1 on THREADS cores.
declare -A FORWARD_ARGS=([ep2]="--ep 2 --threads $THREADS --transport ucx --comm_lanes $LANES"
                         [ep1t2]="--ep 1 --threads $(( 2 * THREADS ))"
                         [ep1t1]="--ep 1 --threads $THREADS")
declare -A RUNS TPS
for rep in 1 2 3; do
  for config in ep2 ep1t2 ep1t1; do
    for length in "$L1" "$L2"; do
      RUNS[$config.$length]+=" $(forward_seconds "$length" ${FORWARD_ARGS[$config]})"
    done
  done
done
for config in ep2 ep1t2 ep1t1; do
  t1=$(median ${RUNS[$config.$L1]}); t2=$(median ${RUNS[$config.$L2]})
  TPS[$config]=$(awk -v t1="$t1" -v t2="$t2" -v n=$(( 4 * (L2 - L1) )) 'BEGIN {printf "%.1f", n / (t2 - t1)}')
  log "forward ${FORWARD_ARGS[$config]}: $L1 tokens:${RUNS[$config.$L1]} s;" \
      "$L2 tokens:${RUNS[$config.$L2]} s -> ${TPS[$config]} tokens/s"
done

# ---- 4. for reference: ucx_perftest on UCX's default transports (no peer error handling)
if [[ -n "$DEFAULT_TLS" ]]; then export UCX_TLS=$DEFAULT_TLS; else unset UCX_TLS; fi
DEFAULT_LAT_US=$(perftest tag_lat 8 "$LAT_ITERS" | awk '{print $2}')
DEFAULT_BW=$(tag_bw "$(field "${RESULT[${RANKS%% *}.4096]}" combine_msg_bytes)")
log "default transports (UCX_TLS=${UCX_TLS:-all}): tag_lat $DEFAULT_LAT_US us, tag_bw $DEFAULT_BW B/s"
log "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- table
DATE=$(date +%F)
CMD='`tools/bench_ep.sh`'
for size in $RANKS; do
  note="$size UCX ranks on 127.0.0.1"
  note="$note, $THREADS thread(s) and $LANES UCX lane(s) per rank, $(nproc) cores"
  (( size * THREADS > $(nproc) )) && note="$note: oversubscribed"
  r=${RESULT[$size.4096]}
  awk -v r="$r" -v bd="${BW_D[$size.4096]}" -v bc="${BW_C[$size.4096]}" -v note="$note" \
      -v tls="$COMM_TLS" -v dbw="$DEFAULT_BW" -v cmd="$CMD" -v date="$DATE" 'BEGIN {
    n = split(r, kv, " "); for (i = 1; i <= n; ++i) { split(kv[i], p, "="); v[p[1]] = p[2] }
    d = v["dispatch_bytes_per_rank"]; c = v["combine_bytes_per_rank"]
    peer = (d + c) / (d / bd + c / bc)
    printf "| EP dispatch + combine (ExpertDispatcher over UCX), prefill-sized step: 4096 tokens/rank, hidden 7168, top-8 of 256 experts, FP8 dispatch / BF16 combine, %s | %.3f GB/s per rank (%.1f MB sent to peers per step; p50 %.0f ms, p90 %.0f ms, of which outside AllToAllV, i.e. encoding, decoding and buffers: %.0f ms); the same messages through Communicator::AllToAllV alone: %.3f GB/s | ucx_perftest tag_bw on the communicator'"'"'s transports (UCX_TLS=%s) at the same message sizes (%.1f / %.1f MB): %.3f GB/s (UCX default transports, shared memory + CMA: %.2f GB/s) | %.2f (goal ≥ 0.70); AllToAllV alone %.2f | %s | %s |\n",
      note, v["gbps"], (d + c) / 1e6, v["p50_us"] / 1e3, v["p90_us"] / 1e3, v["codec_p50_us"] / 1e3,
      v["a2a_gbps"], tls,
      v["dispatch_msg_bytes"] / 1e6, v["combine_msg_bytes"] / 1e6, peer / 1e9, dbw / 1e9,
      v["gbps"] * 1e9 / peer, v["a2a_gbps"] * 1e9 / peer, cmd, date
  }'
done
for size in $RANKS; do
  note="$size UCX ranks on 127.0.0.1"
  note="$note, $THREADS thread(s) and $LANES UCX lane(s) per rank, $(nproc) cores"
  (( size * THREADS > $(nproc) )) && note="$note: oversubscribed"
  r=${RESULT[$size.128]}
  awk -v r="$r" -v bd="${BW_D[$size.128]}" -v bc="${BW_C[$size.128]}" -v lat="$LAT_US" \
      -v tls="$COMM_TLS" -v dlat="$DEFAULT_LAT_US" -v note="$note" -v cmd="$CMD" -v date="$DATE" 'BEGIN {
    n = split(r, kv, " "); for (i = 1; i <= n; ++i) { split(kv[i], p, "="); v[p[1]] = p[2] }
    d = v["dispatch_bytes_per_rank"]; c = v["combine_bytes_per_rank"]
    floor_us = 2 * lat + (d / bd + c / bc) * 1e6
    printf "| EP dispatch + combine (ExpertDispatcher over UCX), decode-sized step: 128 tokens/rank, hidden 7168, top-8 of 256 experts, FP8 dispatch / BF16 combine, %s | p50 %.0f µs, p90 %.0f µs, of which outside AllToAllV (encoding, decoding, buffers) %.0f µs (%.2f MB sent to peers per rank); the same messages through Communicator::AllToAllV alone: p50 %.0f µs | floor from ucx_perftest on UCX_TLS=%s: 2 × tag_lat %.1f µs + per-rank bytes / tag_bw at the message sizes = %.0f µs (UCX default transports: tag_lat %.2f µs) | %.1f× (goal ≤ 3×); AllToAllV alone %.1f× | %s | %s |\n",
      note, v["p50_us"], v["p90_us"], v["codec_p50_us"], (d + c) / 1e6, v["a2a_p50_us"], tls, lat,
      floor_us, dlat, v["p50_us"] / floor_us, v["a2a_p50_us"] / floor_us, cmd, date
  }'
done
awk -v a="${TPS[ep2]}" -v b="${TPS[ep1t2]}" -v c="${TPS[ep1t1]}" -v l1="$L1" -v l2="$L2" \
    -v t="$THREADS" -v lanes="$LANES" -v cmd="$CMD" -v date="$DATE" 'BEGIN {
  printf "| End to end: `epinfer forward --mode decode --ep 2 --transport ucx --threads %d --comm_lanes %d` (2 processes × %d cores), small preset bf16, 4 sequences (2 per rank), positions %d-%d | %.1f tokens/s | `--ep 1 --threads %d` (1 process × %d cores): %.1f tokens/s; `--ep 1 --threads %d`: %.1f tokens/s | %.2f× of --threads %d; %.2f× of --threads %d | %s | %s |\n",
    t, lanes, t, l1, l2, a, 2 * t, 2 * t, b, t, c, a / b, 2 * t, a / c, t, cmd, date
}'
