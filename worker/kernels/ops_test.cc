#include "worker/kernels/ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/kernels/simd.h"

namespace epinfer {
namespace {

std::vector<float> RandomVector(int64_t count, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& f : v) f = normal(rng);
  return v;
}

// Every vector path against double-precision formulas, at lengths around the vector widths.
class OpsTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!SetSimdLevel(GetParam())) GTEST_SKIP() << "this CPU lacks " << GetParam();
  }
  void TearDown() override { SetSimdLevel(best_); }

 private:
  const char* best_ = SimdLevel();
};

constexpr int64_t kLengths[] = {1, 7, 8, 15, 16, 17, 33, 100, 1027};

TEST_P(OpsTest, DotAndAxpyMatchDoublePrecision) {
  for (int64_t n : kLengths) {
    const std::vector<float> a = RandomVector(n, 1), b = RandomVector(n, 2);
    double want = 0, magnitude = 0;
    for (int64_t i = 0; i < n; ++i) {
      want += static_cast<double>(a[i]) * b[i];
      magnitude += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(Dot(a.data(), b.data(), n), want, 1e-6 * magnitude) << n;
    std::vector<float> y = b;
    Axpy(-1.5f, a.data(), n, y.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(y[i], b[i] - 1.5 * a[i], 1e-6 * (std::fabs(b[i]) + std::fabs(a[i]))) << n;
    }
  }
}

TEST_P(OpsTest, RmsNormMatchesDoublePrecisionInPlaceToo) {
  for (int64_t dim : kLengths) {
    const std::vector<float> x = RandomVector(2 * dim, 3, 4.0f), weight = RandomVector(dim, 4);
    std::vector<float> out(x.size());
    RmsNorm(x.data(), 2, dim, weight.data(), 1e-6f, out.data());
    std::vector<float> in_place = x;
    RmsNorm(in_place.data(), 2, dim, weight.data(), 1e-6f, in_place.data());
    for (int64_t t = 0; t < 2; ++t) {
      double sum = 0;
      for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
      const double inv = 1.0 / std::sqrt(sum / dim + 1e-6);
      for (int64_t i = 0; i < dim; ++i) {
        const double want = x[t * dim + i] * inv * weight[i];
        ASSERT_NEAR(out[t * dim + i], want, 1e-6 * (std::fabs(want) + 1e-3)) << dim << " " << i;
        ASSERT_EQ(in_place[t * dim + i], out[t * dim + i]);
      }
    }
  }
}

TEST_P(OpsTest, SiluMulMatchesDoublePrecisionOverTheActivationRange) {
  for (int64_t n : kLengths) {
    std::vector<float> gate = RandomVector(n, 5, 6.0f);
    if (n > 3) gate[0] = -100.0f, gate[1] = 95.0f, gate[2] = 0.0f;  // beyond exp's range
    const std::vector<float> up = RandomVector(n, 6);
    std::vector<float> out(static_cast<size_t>(n));
    SiluMul(gate.data(), up.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i];
      const double want = g / (1.0 + std::exp(-g)) * up[i];
      ASSERT_NEAR(out[i], want, 2e-6 * std::fabs(want) + 1e-30) << "gate " << g;
    }
  }
}

TEST_P(OpsTest, SoftmaxMatchesDoublePrecisionAndSumsToOne) {
  for (int64_t n : kLengths) {
    const std::vector<float> x = RandomVector(n, 7, 10.0f);
    std::vector<float> p = x;
    Softmax(p.data(), n);
    double max = x[0];
    for (float v : x) max = std::max<double>(max, v);
    double sum = 0;
    for (float v : x) sum += std::exp(v - max);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(x[i] - max) / sum;
      // x - max is rounded to float before exp: half an ulp of the argument is relative error.
      const double tolerance = want * (2e-6 + 6e-8 * std::fabs(x[i] - max)) + 1e-37;
      ASSERT_NEAR(p[i], want, tolerance) << n << " " << i;
      total += p[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

TEST_P(OpsTest, NanPropagatesThroughSoftmaxAndSilu) {
  std::vector<float> x = {1.0f, NAN, 2.0f, 3.0f, 0.5f, 1.0f, 1.0f, 1.0f, 1.0f,
                          1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
  std::vector<float> p = x;
  Softmax(p.data(), static_cast<int64_t>(p.size()));
  EXPECT_TRUE(std::isnan(p[1]));
  std::vector<float> out(x.size());
  SiluMul(x.data(), x.data(), static_cast<int64_t>(x.size()), out.data());
  EXPECT_TRUE(std::isnan(out[1]));
  EXPECT_FALSE(std::isnan(out[0]));
}

// AttendRows against double-precision attention over the same rows gathered into one matrix:
// head counts across the kernel's 8-head tiles, row lengths around the vector widths (out_dim
// below the row length, as the latent part of a cached row), rows split into runs as KV blocks.
TEST_P(OpsTest, AttendRowsMatchesDoublePrecisionAttention) {
  struct Case {
    int64_t heads, dim, out_dim;
    std::vector<int64_t> runs;
  };
  const Case cases[] = {{1, 16, 16, {1}},          {4, 288, 256, {16, 16, 16, 11}},
                        {3, 80, 64, {5, 7}},       {8, 576, 512, {16, 3}},
                        {11, 33, 17, {2, 1, 30}},  {9, 100, 100, {64}},
                        {16, 47, 31, {1, 1, 1, 1}}};
  for (const Case& c : cases) {
    int64_t total = 0;
    for (int64_t n : c.runs) total += n;
    const std::vector<float> rows = RandomVector(total * c.dim, 11);
    const std::vector<float> q = RandomVector(c.heads * c.dim, 12, 0.3f);
    // Each run in its own buffer, so the kernel can only reach a run's rows through the run.
    std::vector<std::vector<float>> blocks;
    std::vector<RowRun> runs;
    int64_t r0 = 0;
    for (int64_t n : c.runs) {
      blocks.emplace_back(rows.begin() + r0 * c.dim, rows.begin() + (r0 + n) * c.dim);
      runs.push_back({blocks.back().data(), n});
      r0 += n;
    }
    const float scale = 0.125f;
    const int64_t ldo = c.out_dim + 3;
    std::vector<float> probs(static_cast<size_t>(c.heads * total));
    std::vector<float> out(static_cast<size_t>(c.heads * ldo), -7.0f);
    AttendRows(q.data(), c.heads, c.dim, runs, scale, c.out_dim, probs.data(), out.data(), ldo);
    for (int64_t h = 0; h < c.heads; ++h) {
      std::vector<double> p(static_cast<size_t>(total));
      double max = -INFINITY, sum = 0;
      for (int64_t r = 0; r < total; ++r) {
        double dot = 0;
        for (int64_t k = 0; k < c.dim; ++k) {
          dot += static_cast<double>(q[h * c.dim + k]) * rows[r * c.dim + k];
        }
        p[r] = scale * dot;
        max = std::max(max, p[r]);
      }
      for (double& v : p) sum += (v = std::exp(v - max));
      for (int64_t r = 0; r < total; ++r) {
        ASSERT_NEAR(probs[h * total + r], p[r] / sum, 1e-5) << c.heads << " " << h << " " << r;
      }
      for (int64_t j = 0; j < c.out_dim; ++j) {
        double want = 0;
        for (int64_t r = 0; r < total; ++r) want += p[r] / sum * rows[r * c.dim + j];
        ASSERT_NEAR(out[h * ldo + j], want, 1e-5) << c.heads << " " << h << " " << j;
      }
      for (int64_t j = c.out_dim; j < ldo; ++j) ASSERT_EQ(out[h * ldo + j], -7.0f);  // untouched
    }
  }
}

// No rows to attend to (or no heads): the outputs are zeros, nothing is read past them.
TEST_P(OpsTest, AttendRowsOverNoRowsGivesZeros) {
  const std::vector<float> q = RandomVector(2 * 32, 13);
  std::vector<float> out(2 * 20, -7.0f), probs(1);
  AttendRows(q.data(), 2, 32, {}, 0.5f, 16, probs.data(), out.data(), 20);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t j = 0; j < 20; ++j) EXPECT_EQ(out[h * 20 + j], j < 16 ? 0.0f : -7.0f) << j;
  }
  const RowRun empty[] = {{q.data(), 0}};
  AttendRows(q.data(), 0, 32, empty, 0.5f, 16, probs.data(), out.data(), 20);
  EXPECT_EQ(out[0], 0.0f);
}

INSTANTIATE_TEST_SUITE_P(AllPaths, OpsTest, ::testing::Values("scalar", "avx2", "avx512", "avx512vbmi"));

}  // namespace
}  // namespace epinfer
