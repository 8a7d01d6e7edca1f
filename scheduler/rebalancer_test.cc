#include "scheduler/rebalancer.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

ExpertPlacement Contiguous(int ranks, int experts) {
  auto p = ExpertPlacement::Contiguous(2, {false, true}, experts, ranks);
  EXPECT_TRUE(p.ok());
  return *p;
}

LoadSnapshot Skewed(const ExpertPlacement& current) {
  LoadSnapshot s;
  s.placement_version = current.version;
  s.total_tokens = 10000;
  // Experts 0-3 (all on rank 0 under the contiguous placement) are hot.
  s.expert_load[1] = {1000, 900, 800, 700, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10};
  for (int r = 0; r < 4; ++r) {
    double rows = 0;
    for (int e = r * 4; e < r * 4 + 4; ++e) rows += s.expert_load[1][e];
    s.rank_load[1][r] = rows;
  }
  return s;
}

TEST(RebalancerTest, ASkewedLoadGetsABetterBalancedPlacementWithTheSameSlots) {
  const ExpertPlacement current = Contiguous(4, 16);
  auto proposal = ProposeRebalance(Skewed(current), current, {});
  ASSERT_TRUE(proposal.has_value());
  // Rank 0 carries 3400 of 3520 rows: max/mean = 3400 / 880.
  EXPECT_NEAR(proposal->imbalance_before, 3400.0 / 880.0, 1e-9);
  EXPECT_LT(proposal->imbalance_after, 1.2);
  const LayerPlacement& layer = proposal->placement.layers[1];
  EXPECT_EQ(layer.num_ranks, 4);
  EXPECT_EQ(layer.slots_per_rank, 4);
  EXPECT_EQ(layer.log2phy.size(), 16u);
}

TEST(RebalancerTest, NothingIsProposedForBalancedOrTooLittleTraffic) {
  const ExpertPlacement current = Contiguous(4, 16);
  LoadSnapshot balanced;
  balanced.placement_version = current.version;
  balanced.total_tokens = 10000;
  balanced.expert_load[1] = std::vector<double>(16, 100.0);
  for (int r = 0; r < 4; ++r) balanced.rank_load[1][r] = 400;
  EXPECT_FALSE(ProposeRebalance(balanced, current, {}).has_value());
  LoadSnapshot little = Skewed(current);
  little.total_tokens = 10;
  EXPECT_FALSE(ProposeRebalance(little, current, {}).has_value());
}

TEST(RebalancerTest, ReplicasLetAHotExpertSpreadOverRanks) {
  // 4 ranks × 5 slots for 16 experts: 4 redundant slots go to the hottest experts.
  ExpertPlacement current;
  current.version = 3;
  current.layers.resize(2);
  LayerPlacement& layer = current.layers[1];
  layer.num_ranks = 4;
  layer.slots_per_rank = 5;
  for (int s = 0; s < 20; ++s) layer.phy2log.push_back(s % 16);
  ASSERT_TRUE(layer.Index(16).ok());
  LoadSnapshot load;
  load.placement_version = 3;
  load.total_tokens = 10000;
  load.expert_load[1] = std::vector<double>(16, 10.0);
  load.expert_load[1][7] = 2000;
  auto proposal = ProposeRebalance(load, current, {});
  ASSERT_TRUE(proposal.has_value());
  EXPECT_GE(proposal->placement.layers[1].log2phy[7].size(), 4u);
}

}  // namespace
}  // namespace epinfer
