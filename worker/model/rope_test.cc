#include "worker/model/rope.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

// The tiny preset's rope: dim 16, base 10000, YaRN factor 40 over 64 positions, beta 32/1.
ModelConfig TinyRope() {
  ModelConfig c;
  c.qk_rope_head_dim = 16;
  c.rope_theta = 10000;
  c.rope_scaling = RopeScaling{"yarn", 40, 64, 32, 1, 1.0, 1.0};
  return c;
}

TEST(RopeTest, YarnFrequenciesMatchTheFormulaWorkedByHand) {
  // Correction range: 16·ln(64/(32·2π))/(2·ln 10000) = −0.994 → floor → clamp 0;
  // 16·ln(64/(1·2π))/(2·ln 10000) = 2.016 → ceil 3. Ramp over pairs: 0, 1/3, 2/3, 1, 1, ...
  // inv_freq = b/40·ramp + b·(1 − ramp), b = 10000^(−2i/16).
  Rope rope(TinyRope());
  ASSERT_EQ(rope.inv_freq().size(), 8u);
  EXPECT_NEAR(rope.inv_freq()[0], 1.0, 1e-12);
  EXPECT_NEAR(rope.inv_freq()[1], 0.316227766 * (2.0 / 3 + 1.0 / 120), 1e-9);
  EXPECT_NEAR(rope.inv_freq()[2], 0.1 * (1.0 / 3 + 2.0 / 120), 1e-9);
  EXPECT_NEAR(rope.inv_freq()[3], 0.0316227766 / 40, 1e-11);
  EXPECT_NEAR(rope.inv_freq()[7], 0.000316227766 / 40, 1e-12);
  EXPECT_DOUBLE_EQ(rope.mscale(), 1.0);  // mscale == mscale_all_dim
}

TEST(RopeTest, WithoutScalingFrequenciesArePlainRope) {
  ModelConfig c = TinyRope();
  c.rope_scaling.reset();
  Rope rope(c);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(rope.inv_freq()[i], std::pow(10000.0, -2.0 * i / 16), 1e-15);
  }
}

TEST(RopeTest, MscaleRatioScalesCosAndSin) {
  ModelConfig c = TinyRope();
  c.rope_scaling->mscale = 0.707;
  c.rope_scaling->mscale_all_dim = 1.0;
  Rope rope(c);
  const double expected = (0.1 * 0.707 * std::log(40.0) + 1) / (0.1 * std::log(40.0) + 1);
  EXPECT_NEAR(rope.mscale(), expected, 1e-12);
  std::vector<float> cs(16);
  rope.Angles(0, cs.data());
  EXPECT_NEAR(cs[0], expected, 1e-6);  // cos 0 × mscale
  EXPECT_NEAR(cs[1], 0.0, 1e-7);
}

TEST(RopeTest, RotatesInterleavedPairsAndScoresDependOnlyOnRelativePosition) {
  Rope rope(TinyRope());
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> q(16), k(16);
  for (float& v : q) v = normal(rng);
  for (float& v : k) v = normal(rng);
  auto rotated_dot = [&](int64_t m, int64_t n) {
    std::vector<float> a = q, b = k, cs(16);
    rope.Angles(m, cs.data());
    rope.Apply(cs.data(), a.data(), 1, 16);
    rope.Angles(n, cs.data());
    rope.Apply(cs.data(), b.data(), 1, 16);
    double dot = 0;
    for (int i = 0; i < 16; ++i) dot += a[i] * b[i];
    return dot;
  };
  EXPECT_NEAR(rotated_dot(10, 3), rotated_dot(107, 100), 1e-4);
  // Pair (0, 1) at position 1 turns by inv_freq[0] = 1 radian.
  std::vector<float> x = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, cs(16);
  rope.Angles(1, cs.data());
  rope.Apply(cs.data(), x.data(), 1, 16);
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-6);
}

}  // namespace
}  // namespace epinfer
