#include "scheduler/eplb.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

// DeepSeek's EPLB README example: 2 layers, 12 experts, 16 replicas, 4 groups, 2 nodes, 8 GPUs.
TEST(EplbTest, ReproducesTheReadmeExampleExactly) {
  EplbInput in;
  in.weight = {{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
               {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};
  in.num_replicas = 16;
  in.num_groups = 4;
  in.num_nodes = 2;
  in.num_gpus = 8;
  auto r = RebalanceExperts(in);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->phy2log[0], (std::vector<int32_t>{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1}));
  EXPECT_EQ(r->phy2log[1], (std::vector<int32_t>{7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}));
}

// Properties on random loads: every expert has >= 1 replica, counts sum to the slots, log2phy
// is the inverse of phy2log, and each GPU holds the same number of slots (by construction of
// the layout: num_replicas / num_gpus consecutive slots).
void CheckProperties(const EplbInput& in, const EplbResult& r) {
  for (size_t l = 0; l < in.weight.size(); ++l) {
    ASSERT_EQ(r.phy2log[l].size(), static_cast<size_t>(in.num_replicas));
    int total = 0;
    for (size_t e = 0; e < in.weight[l].size(); ++e) {
      EXPECT_GE(r.logcnt[l][e], 1);
      total += r.logcnt[l][e];
      int listed = 0;
      for (int32_t p : r.log2phy[l][e]) {
        if (p < 0) continue;
        ++listed;
        EXPECT_EQ(r.phy2log[l][p], static_cast<int32_t>(e));
      }
      EXPECT_EQ(listed, r.logcnt[l][e]);
    }
    EXPECT_EQ(total, in.num_replicas);
  }
}

// Straightforward references EPLB must not be worse than. Round robin: replicas by largest load
// per replica (as eplb.py), then dealt onto GPUs in slot order (ignores nodes, so it is the
// baseline of the global policy). Contiguous: no replicas, experts sharded in order (what runs
// before any rebalancing).
double ContiguousImbalance(const std::vector<double>& weight, int gpus) {
  std::vector<double> load(static_cast<size_t>(gpus), 0.0);
  const size_t per_gpu = weight.size() / gpus;
  for (size_t e = 0; e < weight.size(); ++e) load[e / per_gpu] += weight[e];
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / gpus;
  return *std::max_element(load.begin(), load.end()) / mean;
}

double RoundRobinImbalance(const std::vector<double>& weight, int replicas, int gpus) {
  std::vector<int> phy2log, rank, logcnt;
  ReplicateExperts(weight, replicas, &phy2log, &rank, &logcnt);
  std::vector<double> load(static_cast<size_t>(gpus), 0.0);
  for (int p = 0; p < replicas; ++p) load[p % gpus] += weight[phy2log[p]] / logcnt[phy2log[p]];
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / gpus;
  return *std::max_element(load.begin(), load.end()) / mean;
}

TEST(EplbTest, RandomAndZipfLoadsKeepInvariantsAndBalanceAtLeastAsWellAsRoundRobin) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    EplbInput in;
    const int experts = 64;
    in.num_gpus = 8;
    in.num_nodes = trial % 3 == 0 ? 1 : 2;
    in.num_groups = trial % 2 ? 8 : 4;
    in.num_replicas = 64 + 8 * (trial % 4);
    std::vector<double> layer(experts);
    const bool zipf = trial % 2 == 0;
    std::vector<int> perm(experts);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int e = 0; e < experts; ++e) {
      layer[perm[e]] = zipf ? 10000.0 / std::pow(e + 1, 1.1)
                            : std::uniform_real_distribution<double>(1, 1000)(rng);
    }
    in.weight = {layer};
    auto r = RebalanceExperts(in);
    ASSERT_TRUE(r.ok()) << r.status();
    CheckProperties(in, *r);
    const double balanced = GpuImbalance(layer, r->phy2log[0], in.num_gpus);
    EXPECT_LE(balanced, ContiguousImbalance(layer, in.num_gpus) + 1e-9) << "trial " << trial;
    if (in.num_nodes == 1) {
      EXPECT_LE(balanced, RoundRobinImbalance(layer, in.num_replicas, in.num_gpus) + 1e-9)
          << "trial " << trial;
    }
  }
}

TEST(EplbTest, BadInputsAreClearErrors) {
  EplbInput in;
  in.weight = {{1, 2, 3, 4}};
  in.num_replicas = 6;
  in.num_gpus = 4;  // 6 % 4
  EXPECT_NE(RebalanceExperts(in).status().message().find("multiple of num_gpus"), absl::string_view::npos);
  in.num_gpus = 2;
  in.num_groups = 3;
  EXPECT_NE(RebalanceExperts(in).status().message().find("num_groups 3"), absl::string_view::npos);
  in.num_groups = 1;
  in.weight = {{1, -2, 3, 4}};
  EXPECT_NE(RebalanceExperts(in).status().message().find("weight[0][1]"), absl::string_view::npos);
  in.weight = {{}};
  EXPECT_FALSE(RebalanceExperts(in).ok());
  in.weight = {{1, 2, 3, 4}, {1, 2}};
  EXPECT_NE(RebalanceExperts(in).status().message().find("weight[1]"), absl::string_view::npos);
  in.weight = {{1, 2, 3, 4}};
  in.num_replicas = 2;
  EXPECT_FALSE(RebalanceExperts(in).ok());
}

TEST(BalancedPackingTest, HeaviestFirstIntoTheLightestPackWithRoom) {
  std::vector<int> pack, rank;
  BalancedPacking({5, 1, 4, 2}, 2, &pack, &rank);
  // 5 → pack 0; 4 → pack 1; 2 → pack 1 (lighter); 1 → pack 0.
  EXPECT_EQ(pack, (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(rank, (std::vector<int>{0, 1, 0, 1}));
}

}  // namespace
}  // namespace epinfer
