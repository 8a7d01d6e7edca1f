#!/bin/bash
# Serving speed on the `small` preset, everything in one run (docs/PERFORMANCE.md, issue 6):
#   1. the engine's own batch-32 decode rate in the served layout: `epinfer forward --mode decode
#      --ep 2 --transport ucx --threads 1` on 32 sequences (2 UCX ranks of 1 thread, 16 sequences
#      each; no gRPC, no router, no step loop): wall and CPU time of 160 steps minus those of 32
#      (decode positions 32-159, as served below), so
#      process start, model load and UCX wire-up cancel; median of 3 runs each, measured before
#      and after the served runs (the ratio uses their mean: other sessions share this machine);
#   2. `epinfer serve --workers 2` (router + scheduler + 2 UCX worker ranks of 1 thread) under
#      `epinfer bench serve` at concurrency 1, 8 and 32 (closed loop, 32-token prompts, 128 tokens
#      out, two waves at 8 and 32): output tokens/s, and the CPU each component spent at 32;
#   3. router overhead: short requests (4-token prompt, 2 tokens out, one at a time) through the
#      router and straight to worker 0 of the same cluster (Worker.Submit), alternating rounds.
# Prints the results as markdown rows for docs/PERFORMANCE.md.
#   tools/bench_serve.sh [--quick]      (--quick: few requests, to check the script itself)
# On 2 cores the router, the scheduler, both workers and the load generator share the machine.
# The environment passes through (e.g. OMP_NUM_THREADS=1 tools/bench_serve.sh).
# Takes 6 to 10 minutes on 2 busy cores, plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"
CACHE=${EPINFER_BENCH_CACHE:-/tmp/epinfer-bench}  # engine_bench's --cache_dir keeps it there too
MODEL="$CACHE/small-bf16"
WORK=$(mktemp -d /tmp/bench_serve.XXXXXX)
SERVE_PID=""
cleanup() {
  if [[ -n "$SERVE_PID" ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID"
    timeout 60 tail --pid="$SERVE_PID" -f /dev/null || kill -KILL "$SERVE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "$*" >&2; }

log "== build (bazel build -c opt)"
bazel build -c opt //cli:epinfer >&2
# A copy: other sessions may rebuild bazel-bin while this runs.
mkdir -p "$WORK/bin"
cp "$(bazel info -c opt bazel-bin 2>/dev/null)/cli/epinfer" "$WORK/bin/"
EPINFER="$WORK/bin/epinfer"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "== $(getconf _NPROCESSORS_ONLN) cores, load average: $LOAD_BEFORE"

if [[ ! -f "$MODEL/config.json" ]]; then
  log "== epinfer make-model --preset small --dtype bf16 --out $MODEL"
  rm -rf "$MODEL.partial"
  mkdir -p "$CACHE"
  "$EPINFER" make-model --preset small --dtype bf16 --seed 1 --out "$MODEL.partial" >&2
  mv "$MODEL.partial" "$MODEL"
fi

# ---- 1. the engine alone, in the served layout
# timed CMD...: "wall_s cpu_s" of the command; CPU includes the processes it waited for.
timed() {
  python3 -c '
import resource, subprocess, sys, time
before = resource.getrusage(resource.RUSAGE_CHILDREN)
start = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, timeout=600)
wall = time.monotonic() - start
after = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f} {after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime:.3f}")
' "$@"
}
sequences() {  # sequences N: 32 random token sequences of N tokens, ';'-separated
  python3 -c "import random
r = random.Random(7)
print(';'.join(','.join(str(r.randrange(2, 8000)) for _ in range($1)) for _ in range(32)))"
}
# Decode positions L1..L2-1 = 32..159, the positions the served requests below decode at (32-token
# prompts, 128 tokens out): attention grows with the context, so the engine's rate is measured on
# the same work the service does.
L1=32; L2=160
(( QUICK )) && L2=48
# engine_decode LABEL: sets ENGINE_TPS[LABEL] (tokens/s) and ENGINE_CPU_MS[LABEL] (CPU ms/token).
declare -A ENGINE_TPS ENGINE_CPU_MS
engine_decode() {
  local label=$1 L runs wall_1 wall_2 cpu_1 cpu_2
  for L in $L1 $L2; do
    log "== engine ($label): epinfer forward --mode decode --ep 2 --transport ucx --threads 1," \
        "32 sequences x $L tokens"
    runs=()
    for _ in 1 2 3; do
      runs+=("$(timed "$EPINFER" forward --model "$MODEL" --tokens "$(sequences $L)" \
          --out "$WORK/logits" --mode decode --ep 2 --transport ucx --threads 1)")
      log "  wall, CPU seconds: ${runs[-1]}"
    done
    wall_2=$(printf '%s\n' "${runs[@]}" | awk '{print $1}' | sort -g | sed -n 2p)
    cpu_2=$(printf '%s\n' "${runs[@]}" | awk '{print $2}' | sort -g | sed -n 2p)
    if (( L == L1 )); then wall_1=$wall_2; cpu_1=$cpu_2; fi
  done
  rm -f "$WORK/logits"
  ENGINE_TPS[$label]=$(awk -v a="$wall_1" -v b="$wall_2" -v n=$(( 32 * (L2 - L1) )) \
      'BEGIN {printf "%.1f", n / (b - a)}')
  ENGINE_CPU_MS[$label]=$(awk -v a="$cpu_1" -v b="$cpu_2" -v n=$(( 32 * (L2 - L1) )) \
      'BEGIN {printf "%.2f", 1000 * (b - a) / n}')
  log "engine ($label), batch 32 over 2 ranks: ${ENGINE_TPS[$label]} tok/s," \
      "${ENGINE_CPU_MS[$label]} CPU ms per token"
}
engine_decode before

# ---- 2. the served cluster
log "== epinfer serve --model $MODEL --workers 2"
mkdir -p "$WORK/run"
"$EPINFER" serve --model "$MODEL" --workers 2 --port 0 --run_dir "$WORK/run" \
    >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 240); do
  grep -q "serve listening" "$WORK/serve.log" && break
  kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "serve listening" "$WORK/serve.log" || { log "serve did not start in 120 s"; exit 1; }
ROUTER=$(grep -o 'serve listening grpc=[0-9.:]*' "$WORK/serve.log" | sed 's/.*grpc=//')
WORKER0=$(grep -o 'worker listening grpc=[0-9.:]*' "$WORK/run/worker-0.log" | sed 's/.*grpc=//')
log "router $ROUTER, worker 0 $WORKER0"

# cpu_seconds PID...: user + system CPU seconds of those processes so far.
cpu_seconds() {
  local total=0 pid
  for pid in "$@"; do total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") )); done
  awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
}
component_pids() { pgrep -P "$SERVE_PID" -f " $1 " | paste -sd' '; }  # by serve's argv
ROUTER_PIDS=$(component_pids router)
WORKER_PIDS=$(component_pids worker)
SCHEDULER_PIDS=$(component_pids scheduler)

bench() {  # bench NAME FLAGS...: one `epinfer bench serve` run, JSON in $WORK/NAME.json
  local name=$1; shift
  timeout 900 "$EPINFER" bench serve --json "$WORK/$name.json" "$@" >"$WORK/$name.txt" 2>&1 ||
    { cat "$WORK/$name.txt" >&2; return 1; }
  grep -E "Successful|Failed|Output token|P50 (TTFT|ITL|E2EL)" "$WORK/$name.txt" |
    sed "s/^/  $name: /" >&2
}

if (( QUICK )); then COUNTS=(2 8 32); OUT=16; else COUNTS=(4 16 64); OUT=128; fi
i=0
for c in 1 8 32; do
  log "== concurrency $c, ${COUNTS[$i]} requests"
  if (( c == 32 )); then
    r0=$(cpu_seconds $ROUTER_PIDS); w0=$(cpu_seconds $WORKER_PIDS); s0=$(cpu_seconds $SCHEDULER_PIDS)
  fi
  bench "c$c" --target "$ROUTER" --concurrency "$c" --num_requests "${COUNTS[$i]}" \
      --input_len 32 --output_len "$OUT" --seed 1
  i=$(( i + 1 ))
done
ROUTER_CPU=$(awk -v a="$r0" -v b="$(cpu_seconds $ROUTER_PIDS)" 'BEGIN {print b - a}')
WORKERS_CPU=$(awk -v a="$w0" -v b="$(cpu_seconds $WORKER_PIDS)" 'BEGIN {print b - a}')
SCHEDULER_CPU=$(awk -v a="$s0" -v b="$(cpu_seconds $SCHEDULER_PIDS)" 'BEGIN {print b - a}')
log "concurrency 32, CPU seconds: router $ROUTER_CPU, workers $WORKERS_CPU, scheduler $SCHEDULER_CPU"

# ---- 3. router overhead: alternating rounds through the router and straight to worker 0
ROUNDS=5; PER_ROUND=20
(( QUICK )) && { ROUNDS=2; PER_ROUND=4; }
SHORT=(--concurrency 1 --num_requests "$PER_ROUND" --input_len 4 --output_len 2 --warmup_requests 0)
SHORT_ROUTER_CPU=0
for (( r = 0; r < ROUNDS; ++r )); do
  log "== router overhead, round $(( r + 1 )) of $ROUNDS"
  r0=$(cpu_seconds $ROUTER_PIDS)
  bench "short_router_$r" --target "$ROUTER" "${SHORT[@]}" --seed "$r"
  SHORT_ROUTER_CPU=$(awk -v s="$SHORT_ROUTER_CPU" -v a="$r0" -v b="$(cpu_seconds $ROUTER_PIDS)" \
      'BEGIN {print s + b - a}')
  bench "short_direct_$r" --target "$WORKER0" --direct "${SHORT[@]}" --seed "$r"
done
kill -TERM "$SERVE_PID"
timeout 60 tail --pid="$SERVE_PID" -f /dev/null || kill -KILL "$SERVE_PID" 2>/dev/null || true
SERVE_PID=""
engine_decode after
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "== load average after: $LOAD_AFTER"

# ---- table
python3 - "$WORK" "$ROUNDS" "${ENGINE_TPS[before]}" "${ENGINE_TPS[after]}" \
    "${ENGINE_CPU_MS[before]}" "${ENGINE_CPU_MS[after]}" "$ROUTER_CPU" "$WORKERS_CPU" \
    "$SCHEDULER_CPU" "$(getconf _NPROCESSORS_ONLN)" "$(date +%F)" "$LOAD_BEFORE / $LOAD_AFTER" \
    "${OMP_NUM_THREADS:-}" "$SHORT_ROUTER_CPU" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
tps_before, tps_after, cpu_before, cpu_after = map(float, sys.argv[3:7])
router_cpu, workers_cpu, scheduler_cpu = map(float, sys.argv[7:10])
cores, date, load_avg, omp = sys.argv[10], sys.argv[11], sys.argv[12], sys.argv[13]
short_router_cpu = float(sys.argv[14])
engine_tps, engine_cpu_ms = (tps_before + tps_after) / 2, (cpu_before + cpu_after) / 2
load = lambda name: json.load(open(f"{work}/{name}.json"))
c = {n: load(f"c{n}") for n in (1, 8, 32)}
cmd = "`tools/bench_serve.sh`"
setup = (f"`small` bf16; router, scheduler, 2 UCX worker ranks of 1 thread and the load "
         f"generator on {cores} shared cores (load average {load_avg})"
         + (f", OMP_NUM_THREADS={omp}" if omp else ""))
for n in (1, 8, 32):
    r = c[n]
    peer = f"concurrency 1: {c[1]['output_throughput']:.1f} tok/s" if n > 1 else "-"
    ratio = f"{r['output_throughput'] / c[1]['output_throughput']:.2f}×" if n > 1 else "-"
    print(f"| Served output tokens/s at concurrency {n} (`epinfer bench serve`, closed loop, "
          f"{r['num_requests']} requests of {r['input_len']} prompt + {r['output_len']} output "
          f"tokens), {setup} | {r['output_throughput']:.1f} tok/s ({r['failed']} failed; TTFT p50 "
          f"{r['p50_ttft_ms']:.0f} / p99 {r['p99_ttft_ms']:.0f} ms; ITL p50 {r['p50_itl_ms']:.0f} / "
          f"p99 {r['p99_itl_ms']:.0f} ms) | {peer} | {ratio} | {cmd} | {date} |")
r = c[32]
out_tokens = r["total_output_tokens"]
print(f"| Served concurrency-32 output tokens/s vs the engine's own batch-32 decode in the same "
      f"layout (`epinfer forward --mode decode --ep 2 --transport ucx --threads 1`, 32 sequences "
      f"decoding positions 32-159 like the served requests: "
      f"no gRPC, router or step loop), {setup} | {r['output_throughput']:.1f} tok/s served "
      f"(between chunks: 32 / ITL p50 = {32000 / r['p50_itl_ms']:.1f} tok/s); CPU per generated "
      f"token {1000 * workers_cpu / out_tokens:.2f} ms in the workers (prefill included) + "
      f"{1000 * router_cpu / out_tokens:.2f} ms router + {1000 * scheduler_cpu / out_tokens:.2f} ms "
      f"scheduler | engine: {engine_tps:.1f} tok/s (before {tps_before:.1f}, after "
      f"{tps_after:.1f}), {engine_cpu_ms:.2f} CPU ms per token | "
      f"{r['output_throughput'] / engine_tps:.2f} (goal ≥ 0.8); in CPU per token "
      f"{engine_cpu_ms * out_tokens / (1000 * (workers_cpu + router_cpu + scheduler_cpu)):.2f} "
      f"| {cmd} | {date} |")
deltas, ttft_deltas = [], []
for i in range(rounds):
    a, b = load(f"short_router_{i}"), load(f"short_direct_{i}")
    deltas.append(a["p50_e2el_ms"] - b["p50_e2el_ms"])
    ttft_deltas.append(a["p50_ttft_ms"] - b["p50_ttft_ms"])
direct = statistics.median(load(f"short_direct_{i}")["p50_e2el_ms"] for i in range(rounds))
via = statistics.median(load(f"short_router_{i}")["p50_e2el_ms"] for i in range(rounds))
overhead = statistics.median(deltas)
short_requests = rounds * load("short_router_0")["num_requests"]
print(f"| Router overhead per request: short requests (4 prompt + 2 output tokens, one at a time) "
      f"through the router vs straight to worker 0 of the same cluster (Worker.Submit), median over "
      f"{rounds} alternating rounds of {load('short_router_0')['num_requests']} requests of (router "
      f"p50 end-to-end latency − direct p50); router CPU per short request, and per request at "
      f"concurrency 32, {setup} | {overhead:+.1f} ms end to end (TTFT "
      f"{statistics.median(ttft_deltas):+.1f} ms; rounds {', '.join(f'{d:+.1f}' for d in deltas)} ms); "
      f"router CPU {1000 * short_router_cpu / short_requests:.2f} ms per short request, "
      f"{1000 * router_cpu / r['completed']:.1f} ms per {r['output_len']}-token request "
      f"({1000 * router_cpu / out_tokens:.2f} ms per streamed token) | straight to worker 0: p50 "
      f"{direct:.1f} ms; through the router {via:.1f} ms | {overhead / direct:+.1%} of a short "
      f"request | {cmd} | {date} |")
EOF
