// EPLB run time at DeepSeek-V3's shape: 58 MoE layers × 256 experts into 288 slots, 8 groups,
// prefill-like (4 nodes × 8 GPUs, hierarchical) and decode-like (18 nodes × 8 GPUs, global since
// 18 does not divide 8 groups). Loads are Zipf-skewed with a random expert order per layer.
//   bazel run -c opt //scheduler:eplb_bench
#include <cmath>
#include <numeric>
#include <random>

#include "benchmark/benchmark.h"
#include "scheduler/eplb.h"

namespace epinfer {
namespace {

EplbInput DeepSeekShape(int nodes, int gpus) {
  EplbInput in;
  std::mt19937 rng(42);
  for (int l = 0; l < 58; ++l) {
    std::vector<int> order(256);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<double> w(256);
    for (int e = 0; e < 256; ++e) w[order[e]] = 1e6 / std::pow(e + 1, 0.9);
    in.weight.push_back(w);
  }
  in.num_replicas = 288;
  in.num_groups = 8;
  in.num_nodes = nodes;
  in.num_gpus = gpus;
  return in;
}

void BM_Eplb671B(benchmark::State& state) {
  const EplbInput in = DeepSeekShape(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  double worst = 0;
  for (auto _ : state) {
    auto result = RebalanceExperts(in);
    benchmark::DoNotOptimize(result);
    worst = 0;
    for (size_t l = 0; l < in.weight.size(); ++l) {
      worst = std::max(worst, GpuImbalance(in.weight[l], result->phy2log[l], in.num_gpus));
    }
  }
  state.counters["worst_layer_max_over_mean"] = worst;
}
BENCHMARK(BM_Eplb671B)->Args({4, 32})->Args({18, 144})->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace epinfer

BENCHMARK_MAIN();
