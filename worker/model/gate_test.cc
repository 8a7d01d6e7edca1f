#include "worker/model/gate.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

// 8 experts in 4 groups of 2, keep 2 groups, pick 2 experts: small enough to work out by hand.
ModelConfig SmallGate() {
  ModelConfig c;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.topk_method = "noaux_tc";
  c.scoring_func = "sigmoid";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  return c;
}

// logit whose sigmoid is p.
float Logit(double p) { return static_cast<float>(std::log(p / (1 - p))); }

std::vector<float> Logits(std::initializer_list<double> probabilities) {
  std::vector<float> out;
  for (double p : probabilities) out.push_back(Logit(p));
  return out;
}

TEST(GateTest, PicksTheTopExpertsOfTheBestGroupsAndNormalisesTimesScaling) {
  ModelConfig c = SmallGate();
  // Groups: {0.9,0.1}=1.0, {0.6,0.6}=1.2, {0.2,0.3}=0.5, {0.7,0.2}=0.9 → keep groups 1 and 0.
  auto logits = Logits({0.9, 0.1, 0.6, 0.6, 0.2, 0.3, 0.7, 0.2});
  int32_t experts[2];
  float weights[2];
  RouteToken(c, logits.data(), nullptr, experts, weights);
  EXPECT_EQ(experts[0], 0);
  EXPECT_EQ(experts[1], 2);  // 0.6 tie between experts 2 and 3: the lower id
  EXPECT_NEAR(weights[0], 0.9 / 1.5 * 2.5, 1e-6);
  EXPECT_NEAR(weights[1], 0.6 / 1.5 * 2.5, 1e-6);
}

TEST(GateTest, ExpertsOfDroppedGroupsAreNeverChosenEvenIfTheyScoreHighest) {
  ModelConfig c = SmallGate();
  // Expert 6 (0.95) is the best single expert but its group {0.95, 0.01} sums to 0.96 and
  // loses to {0.5, 0.5}=1.0 and {0.6, 0.45}=1.05.
  auto logits = Logits({0.5, 0.5, 0.6, 0.45, 0.3, 0.3, 0.95, 0.01});
  int32_t experts[2];
  float weights[2];
  RouteToken(c, logits.data(), nullptr, experts, weights);
  EXPECT_EQ(experts[0], 2);
  EXPECT_EQ(experts[1], 0);
}

TEST(GateTest, DroppedGroupsAreMaskedWithMinusInfinityNotZero) {
  ModelConfig c = SmallGate();
  c.num_experts_per_tok = 3;  // needs a third expert from the two kept groups
  // A large negative bias makes every kept expert's selection score negative; masking dropped
  // groups with 0.0 (the pre-2025-02-14 model.py) would pick a dropped expert instead.
  auto logits = Logits({0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5});
  std::vector<float> bias = {-1.0f, -1.1f, -1.2f, -1.3f, -5, -5, -5, -5};
  int32_t experts[3];
  float weights[3];
  RouteToken(c, logits.data(), bias.data(), experts, weights);
  for (int i = 0; i < 3; ++i) EXPECT_LT(experts[i], 4) << i;
}

TEST(GateTest, BiasChangesSelectionButNotWeights) {
  ModelConfig c = SmallGate();
  c.n_group = 1;
  c.topk_group = 1;
  auto logits = Logits({0.8, 0.7, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1});
  int32_t experts[2];
  float weights[2];
  RouteToken(c, logits.data(), nullptr, experts, weights);
  EXPECT_EQ(experts[0], 0);
  EXPECT_EQ(experts[1], 1);
  std::vector<float> bias = {0, 0, 0.3f, 0, 0, 0, 0, 0};  // lifts expert 2 to the top
  RouteToken(c, logits.data(), bias.data(), experts, weights);
  EXPECT_EQ(experts[0], 2);
  EXPECT_EQ(experts[1], 0);
  // Weights come from the unbiased sigmoid scores: 0.6 and 0.8, normalised, × 2.5.
  EXPECT_NEAR(weights[0], 0.6 / 1.4 * 2.5, 1e-6);
  EXPECT_NEAR(weights[1], 0.8 / 1.4 * 2.5, 1e-6);
}

TEST(GateTest, WithoutNormalisationWeightsAreScoresTimesScaling) {
  ModelConfig c = SmallGate();
  c.norm_topk_prob = false;
  c.n_group = 1;
  c.topk_group = 1;
  auto logits = Logits({0.8, 0.7, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1});
  int32_t experts[2];
  float weights[2];
  RouteToken(c, logits.data(), nullptr, experts, weights);
  EXPECT_NEAR(weights[0], 0.8 * 2.5, 1e-6);
  EXPECT_NEAR(weights[1], 0.7 * 2.5, 1e-6);
}

TEST(GateTest, V2SoftmaxGreedyTakesTheLargestProbabilities) {
  ModelConfig c = SmallGate();
  c.scoring_func = "softmax";
  c.topk_method = "greedy";
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.0;
  std::vector<float> logits = {0, 1, 2, 3, 0, 0, 0, 0};
  int32_t experts[2];
  float weights[2];
  RouteToken(c, logits.data(), nullptr, experts, weights);
  double z = 0;
  for (float l : logits) z += std::exp(l);
  EXPECT_EQ(experts[0], 3);
  EXPECT_EQ(experts[1], 2);
  EXPECT_NEAR(weights[0], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(weights[1], std::exp(2.0) / z, 1e-6);
}

TEST(GateTest, GroupLimitedGreedyScoresGroupsByTheirMaximum) {
  ModelConfig c = SmallGate();
  c.scoring_func = "softmax";
  c.topk_method = "group_limited_greedy";
  c.topk_group = 1;
  // Group sums would prefer group 1 ({2, 2}); maxima prefer group 0 ({2.5, -9}).
  std::vector<float> logits = {2.5f, -9, 2, 2, 0, 0, 0, 0};
  int32_t experts[2];
  float weights[2];
  RouteToken(c, logits.data(), nullptr, experts, weights);
  EXPECT_EQ(experts[0], 0);
  EXPECT_EQ(experts[1], 1);
}

}  // namespace
}  // namespace epinfer
