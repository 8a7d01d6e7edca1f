#include "worker/model/sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

std::vector<float> LogProbs(std::initializer_list<double> p) {
  std::vector<float> out;
  for (double v : p) out.push_back(static_cast<float>(std::log(v)));
  return out;
}

TEST(SamplerTest, GreedyTakesTheArgmaxWithLowestIdOnTies) {
  Sampler sampler({.temperature = 0});
  std::vector<float> logits = {0.1f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(sampler.Next(logits.data(), 4).token, 1);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(64);
  for (int i = 0; i < 64; ++i) logits[i] = static_cast<float>(std::sin(i));
  auto draw = [&](uint64_t seed) {
    Sampler s({.temperature = 1.0f, .seed = seed});
    std::vector<int32_t> tokens;
    for (int i = 0; i < 50; ++i) tokens.push_back(s.Next(logits.data(), 64).token);
    return tokens;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(SamplerTest, FrequenciesFollowTheDistribution) {
  std::vector<float> logits = LogProbs({0.5, 0.3, 0.2});
  Sampler s({.temperature = 1.0f, .seed = 1});
  std::vector<int> counts(3);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.Next(logits.data(), 3).token];
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);
}

TEST(SamplerTest, TemperatureSharpensTheDistribution) {
  // At T = 0.5, p ∝ p^2: 0.25, 0.09, 0.04 → 0.6579, 0.2368, 0.1053.
  std::vector<float> logits = LogProbs({0.5, 0.3, 0.2});
  Sampler s({.temperature = 0.5f, .seed = 2});
  std::vector<int> counts(3);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.Next(logits.data(), 3).token];
  EXPECT_NEAR(counts[0] / double(n), 0.25 / 0.38, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.04 / 0.38, 0.02);
}

TEST(SamplerTest, TopKAndTopPCutTheTail) {
  std::vector<float> logits = LogProbs({0.4, 0.3, 0.2, 0.1});
  Sampler top_k({.temperature = 1.0f, .top_k = 2, .seed = 3});
  Sampler top_p({.temperature = 1.0f, .top_p = 0.65f, .seed = 3});  // 0.4 + 0.3 ≥ 0.65
  for (int i = 0; i < 2000; ++i) {
    EXPECT_LT(top_k.Next(logits.data(), 4).token, 2);
    EXPECT_LT(top_p.Next(logits.data(), 4).token, 2);
  }
  Sampler nucleus_of_one({.temperature = 1.0f, .top_p = 0.01f, .seed = 4});
  EXPECT_EQ(nucleus_of_one.Next(logits.data(), 4).token, 0);
}

TEST(SamplerTest, ReportsRawLogprobsAndTopAlternatives) {
  std::vector<float> logits = LogProbs({0.5, 0.3, 0.2});
  Sampler s({.temperature = 0, .logprobs = 2});
  SampledToken t = s.Next(logits.data(), 3);
  EXPECT_EQ(t.token, 0);
  EXPECT_NEAR(t.logprob, std::log(0.5), 1e-6);
  ASSERT_EQ(t.top.size(), 2u);
  EXPECT_EQ(t.top[1].first, 1);
  EXPECT_NEAR(t.top[1].second, std::log(0.3), 1e-6);
}

TEST(SamplerTest, OptionsOutOfRangeAreErrorsNamingTheField) {
  EXPECT_NE(ValidateSamplingOptions({.temperature = 2.5f}, 10).message().find("temperature"),
            std::string::npos);
  EXPECT_NE(ValidateSamplingOptions({.top_p = 0}, 10).message().find("top_p"), std::string::npos);
  EXPECT_NE(ValidateSamplingOptions({.top_k = 11}, 10).message().find("top_k"), std::string::npos);
  EXPECT_NE(ValidateSamplingOptions({.logprobs = 21}, 10).message().find("logprobs"),
            std::string::npos);
  EXPECT_FALSE(ValidateSamplingOptions({.temperature = NAN}, 10).ok());
  EXPECT_TRUE(ValidateSamplingOptions({}, 10).ok());
}

}  // namespace
}  // namespace epinfer
