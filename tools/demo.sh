#!/usr/bin/env bash
# The main job: installs what is missing, builds everything, makes the tiny DeepSeek-V3-shaped
# model with its own tokenizer, starts a local cluster (router, scheduler, 2 workers exchanging
# tokens over UCX), streams a chat completion from it, prints the throughput, and shuts the
# cluster down.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
bazel build //...
epinfer="$(bazel info bazel-bin 2>/dev/null)/cli/epinfer"
run=".run/demo"
rm -rf "$run" && mkdir -p "$run"

echo "== make-model: tiny preset, BF16, tokenizer trained on this repository's docs"
cat README.md docs/*.md > "$run/corpus.txt"
"$epinfer" make-model --preset tiny --dtype bf16 --seed 7 --out "$run/model" \
  --tokenizer-corpus "$run/corpus.txt"

echo "== serve: router + scheduler + 2 workers on 127.0.0.1"
"$epinfer" serve --model "$run/model" --workers 2 --port 0 --run_dir "$run" \
  --prometheus_targets "$run/targets.json" 2> "$run/serve.log" &
serve_pid=$!
trap 'kill -TERM $serve_pid 2>/dev/null || true; wait $serve_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "serve listening" "$run/serve.log" && break
  kill -0 $serve_pid 2>/dev/null || { cat "$run/serve.log"; exit 1; }
  sleep 0.2
done
grep "serve listening" "$run/serve.log" || { echo "cluster did not start"; cat "$run/serve.log"; exit 1; }
target=$(grep -o "grpc=[0-9.:]*" "$run/serve.log" | head -1 | cut -d= -f2)

echo "== complete: a streamed chat completion (random weights: the words are noise, the path is real)"
"$epinfer" complete --target "$target" --chat "What does epinfer do?" --max-tokens 48 --seed 1 \
  --temperature 0.8 --print-ids

echo "== metrics: the router's token counters"
router_metrics=$(grep -o '"127.0.0.1:[0-9]*"], "labels": {"component": "router"' "$run/targets.json" | grep -o '127.0.0.1:[0-9]*')
curl -s "http://$router_metrics/metrics" | grep -E "^epinfer_router_(generation|prompt)_tokens_total"

echo "== stopping the cluster"
kill -TERM $serve_pid
wait $serve_pid
trap - EXIT
echo "demo: ok"
