#include "router/routing_policy.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

TEST(LeastLoadedTest, PicksTheRankWithFewestOutstandingTokensThenFewestWaiting) {
  auto policy = MakeRoutingPolicy("least_loaded");
  ASSERT_TRUE(policy.ok());
  std::vector<RankCandidate> c(3);
  c[0].outstanding_tokens = 500;
  c[1].outstanding_tokens = 100;
  c[2].outstanding_tokens = 100;
  c[1].waiting = 3;
  EXPECT_EQ((*policy)->Pick(c), 2u);
  c[2].outstanding_tokens = 900;
  EXPECT_EQ((*policy)->Pick(c), 1u);
}

TEST(RoundRobinTest, CyclesThroughTheRanks) {
  auto policy = MakeRoutingPolicy("round_robin");
  ASSERT_TRUE(policy.ok());
  std::vector<RankCandidate> c(3);
  EXPECT_EQ((*policy)->Pick(c), 0u);
  EXPECT_EQ((*policy)->Pick(c), 1u);
  EXPECT_EQ((*policy)->Pick(c), 2u);
  EXPECT_EQ((*policy)->Pick(c), 0u);
}

TEST(RoutingPolicyTest, UnknownNameIsAnError) {
  EXPECT_EQ(MakeRoutingPolicy("random").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace epinfer
