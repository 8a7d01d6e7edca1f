#include "worker/kernels/linear.h"

#include <atomic>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/kernels/random_weight.h"

namespace epinfer {
namespace {

using Stored = RandomWeight;

Stored MakeWeight(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  return MakeRandomWeight(dtype, rows, cols, seed);
}

struct Case {
  const char* simd;
  DType dtype;
  int64_t n, rows, cols;
  bool panels = false;  // BF16 packed by PackPanels (the AVX-512 panel kernel)
};

class MatMulTest : public ::testing::TestWithParam<Case> {};

TEST_P(MatMulTest, MatchesTheDoublePrecisionProductOfTheDecodedWeight) {
  const Case c = GetParam();
  const char* best = SimdLevel();
  if (!SetSimdLevel(c.simd)) GTEST_SKIP() << "this CPU lacks " << c.simd;
  Stored s = MakeWeight(c.dtype, c.rows, c.cols, 7);
  WeightArena packed;
  if (c.panels) {
    PackPanels(&s.w, &packed);
    ASSERT_NE(s.w.panels, nullptr);
  }
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(c.n * c.cols));
  for (float& v : x) v = normal(rng);
  std::vector<float> y(static_cast<size_t>(c.n * c.rows), NAN);
  MatMul(x.data(), c.n, s.w, y.data());
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t r = 0; r < c.rows; ++r) {
      double want = 0, magnitude = 0;
      for (int64_t k = 0; k < c.cols; ++k) {
        want += s.dense[r * c.cols + k] * x[t * c.cols + k];
        magnitude += std::fabs(s.dense[r * c.cols + k] * x[t * c.cols + k]);
      }
      ASSERT_NEAR(y[t * c.rows + r], want, 1e-5 * magnitude + 1e-6)
          << "token " << t << " row " << r;
    }
  }
  SetSimdLevel(best);
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const char* simd : {"scalar", "avx2", "avx512", "avx512vbmi"}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF8E4M3}) {
      // Decode-sized (streamed, with odd tails and partial FP8 blocks) and prefill-sized (sgemm).
      // 1-4 tokens: row kernels; 5-64: row × token tiles; beyond: sgemm on dequantized panels.
      for (int64_t n : {1, 3, 5, 8, 9, 16, 17, 40, 64, 70}) cases.push_back({simd, dtype, n, 200, 300});
      cases.push_back({simd, dtype, 2, 17, 7});
      // Several whole FP8 blocks per row, then a partial one; 8 = two full token groups.
      for (int64_t n : {1, 8}) cases.push_back({simd, dtype, n, 130, 1000});
    }
  }
  // The panel kernel: token counts around its 12-token blocks and 48-token groups, a last panel
  // of 8 rows (200 = 6 × 32 + 8), a single partial panel, prefill-sized n.
  // FP8 panels: odd columns (the last pairs with padding), rows across a scale block;
  // from 24 tokens FP8 panels are converted to F32 once per token group (23 is not, 24 is).
  for (const char* simd : {"avx512", "avx512vbmi"}) {
    for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
      for (int64_t n : {1, 2, 5, 7, 8, 9, 11, 12, 13, 23, 24, 40, 47, 48, 49, 64, 70, 130, 400}) {
        cases.push_back({simd, dtype, n, 200, 300, true});
      }
      cases.push_back({simd, dtype, 3, 17, 7, true});
      cases.push_back({simd, dtype, 33, 64, 1000, true});
      cases.push_back({simd, dtype, 9, 260, 301, true});
      cases.push_back({simd, dtype, 101, 260, 301, true});
    }
  }
  return cases;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(c.simd) + "_" + std::string(DTypeName(c.dtype) == "F8_E4M3" ? "F8" : DTypeName(c.dtype)) +
         (c.panels ? "panels" : "") + "_n" + std::to_string(c.n) + "_" + std::to_string(c.rows) +
         "x" + std::to_string(c.cols);
}

INSTANTIATE_TEST_SUITE_P(AllPaths, MatMulTest, ::testing::ValuesIn(Cases()), CaseName);

TEST(DequantizeRowsTest, AppliesFp8BlockScalesPerBlock) {
  Stored s = MakeWeight(DType::kF8E4M3, 130, 260, 11);
  std::vector<float> out(static_cast<size_t>(3 * 260));
  DequantizeRows(s.w, 127, 130, out.data());
  for (int64_t i = 0; i < 3 * 260; ++i) {
    EXPECT_EQ(out[i], static_cast<float>(s.dense[127 * 260 + i])) << i;
  }
}

// y = x · W with x [n, w.rows]: the double-precision reference of the untransposed product.
std::vector<double> TransposedReference(const Stored& s, const std::vector<float>& x, int64_t n) {
  std::vector<double> want(static_cast<size_t>(n * s.w.cols), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t k = 0; k < s.w.rows; ++k) {
      for (int64_t c = 0; c < s.w.cols; ++c) {
        want[t * s.w.cols + c] += s.dense[k * s.w.cols + c] * x[t * s.w.rows + k];
      }
    }
  }
  return want;
}

std::vector<float> RandomVector(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& f : v) f = normal(rng);
  return v;
}

// y [n, w.rows] = x · Wᵀ for w, rows [first_row, first_row + w.rows) of s: each output within
// 1e-5 × (|want| + 10) of the double-precision product of the decoded weights.
void ExpectProduct(const Stored& s, const LinearWeight& w, int64_t first_row,
                   const std::vector<float>& x, int64_t n, const std::vector<float>& y) {
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double want = 0;
      for (int64_t k = 0; k < w.cols; ++k) {
        want += s.dense[(first_row + r) * w.cols + k] * x[t * w.cols + k];
      }
      ASSERT_NEAR(y[t * w.rows + r], want, 1e-5 * (std::fabs(want) + 10))
          << "token " << t << " row " << r;
    }
  }
}

class SimdTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!SetSimdLevel(GetParam())) GTEST_SKIP() << "this CPU lacks " << GetParam();
  }
  void TearDown() override { SetSimdLevel(best_); }

 private:
  const char* best_ = SimdLevel();
};

TEST_P(SimdTest, TransposedProductMatchesTheDoublePrecisionReference) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF8E4M3}) {
    // 70 × 200: partial 64-column chunks and partial FP8 blocks in both directions.
    Stored s = MakeWeight(dtype, 70, 200, 5);
    for (int64_t n : {1, 4, 6}) {
      const std::vector<float> x = RandomVector(n * s.w.rows, 9);
      std::vector<float> y(static_cast<size_t>(n * s.w.cols), NAN);
      MatMulTransposed(x.data(), n, s.w, y.data());
      const std::vector<double> want = TransposedReference(s, x, n);
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i], want[i], 1e-5 * (std::fabs(want[i]) + 10)) << DTypeName(dtype) << " " << i;
      }
    }
  }
}

TEST_P(SimdTest, RowViewsOfFp8WeightsUseTheirOwnScaleRows) {
  // Rows [100, 227) straddle the scale-block boundary at row 128.
  Stored s = MakeWeight(DType::kF8E4M3, 300, 260, 13);
  const LinearWeight view = s.w.Rows(100, 227);
  EXPECT_EQ(view.rows, 127);
  EXPECT_EQ(view.first_row, 100);
  EXPECT_EQ(view.bytes(), 127 * 260 + 2 * 3 * 4);  // two scale rows of three blocks
  for (int64_t n : {3, 7}) {  // row kernel; tiles (of rows inside one scale block)
    const std::vector<float> x = RandomVector(n * 260, 1);
    std::vector<float> y(static_cast<size_t>(n * view.rows));
    MatMul(x.data(), n, view, y.data());
    ExpectProduct(s, view, 100, x, n, y);
  }
  const std::vector<float> xt = RandomVector(2 * view.rows, 2);
  std::vector<float> yt(static_cast<size_t>(2 * 260));
  MatMulTransposed(xt.data(), 2, view, yt.data());
  for (int64_t t = 0; t < 2; ++t) {
    for (int64_t c = 0; c < 260; ++c) {
      double want = 0;
      for (int64_t r = 0; r < view.rows; ++r) {
        want += s.dense[(100 + r) * 260 + c] * xt[t * view.rows + r];
      }
      ASSERT_NEAR(yt[t * 260 + c], want, 1e-5 * (std::fabs(want) + 10)) << c;
    }
  }
}

TEST_P(SimdTest, BatchedProductsEqualTheirReferences) {
  Stored a = MakeWeight(DType::kBF16, 200, 300, 21);
  Stored b = MakeWeight(DType::kF8E4M3, 45, 300, 22);
  Stored c = MakeWeight(DType::kF32, 33, 70, 23);
  const std::vector<float> xa = RandomVector(2 * 300, 3), xb = RandomVector(5 * 300, 4),
                           xc = RandomVector(20 * 70, 5);
  std::vector<float> ya(2 * 200), yb(5 * 45), yc(20 * 33);
  // The third job has more tokens than the streaming path takes: it runs as its own MatMul.
  const MatMulJob jobs[] = {{xa.data(), 2, &a.w, ya.data()},
                            {xb.data(), 5, &b.w, yb.data()},
                            {xc.data(), 20, &c.w, yc.data()}};
  MatMulBatch(jobs);
  ExpectProduct(a, a.w, 0, xa, 2, ya);
  ExpectProduct(b, b.w, 0, xb, 5, yb);
  ExpectProduct(c, c.w, 0, xc, 20, yc);
}

// MatMulBatchThen on three MLPs (gate, up → SiLU(gate) · up → down) of 1-3 tokens beside a
// product nothing waits for, and an MLP of no tokens: every product equals its double-precision
// reference, ready() runs exactly once per down product and before it (each down product reads
// what ready() wrote). Packed weights take the one-region path where the CPU has the panel
// kernels; the others run the plain sequence.
TEST_P(SimdTest, DependentBatchesEqualTheirReferences) {
  for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    SCOPED_TRACE(DTypeName(dtype));
    constexpr int64_t kHidden = 300, kInter = 160;
    constexpr int kMlps = 4;
    const int64_t tokens[kMlps] = {1, 3, 0, 2};
    WeightArena arena;
    std::vector<Stored> gates, ups, downs;
    for (int m = 0; m < kMlps; ++m) {
      gates.push_back(MakeWeight(dtype, kInter, kHidden, 50 + m));
      ups.push_back(MakeWeight(dtype, kInter, kHidden, 60 + m));
      downs.push_back(MakeWeight(dtype, kHidden, kInter, 70 + m));
    }
    Stored other = MakeWeight(dtype, 96, kHidden, 80);
    for (auto* list : {&gates, &ups, &downs}) {
      for (Stored& st : *list) PackPanels(&st.w, &arena);
    }
    PackPanels(&other.w, &arena);
    std::vector<std::vector<float>> x(kMlps), g(kMlps), u(kMlps), act(kMlps), y(kMlps);
    const std::vector<float> x_other = RandomVector(kHidden, 90);
    std::vector<float> y_other(96);
    std::vector<MatMulJob> first = {{x_other.data(), 1, &other.w, y_other.data()}}, second;
    std::vector<std::vector<size_t>> after;
    std::vector<int> mlp_of;
    for (int m = 0; m < kMlps; ++m) {
      x[m] = RandomVector(tokens[m] * kHidden, 91 + m);
      // Small inputs keep the down products' terms near their sums, where ExpectProduct's
      // tolerance (relative to the sum) is meant to apply.
      for (float& v : x[m]) v *= 0.05f;
      g[m].resize(static_cast<size_t>(tokens[m] * kInter));
      u[m].resize(g[m].size());
      act[m].assign(g[m].size(), 0.0f);
      y[m].resize(static_cast<size_t>(tokens[m] * kHidden));
      after.push_back({first.size(), first.size() + 1});
      first.push_back({x[m].data(), tokens[m], &gates[m].w, g[m].data()});
      first.push_back({x[m].data(), tokens[m], &ups[m].w, u[m].data()});
      second.push_back({act[m].data(), tokens[m], &downs[m].w, y[m].data()});
      mlp_of.push_back(m);
    }
    std::vector<std::atomic<int>> calls(second.size());
    MatMulBatchThen(first, second, after, [&](size_t j) {
      calls[j].fetch_add(1);
      const int m = mlp_of[j];
      for (size_t i = 0; i < act[m].size(); ++i) {
        act[m][i] = g[m][i] / (1.0f + std::exp(-g[m][i])) * u[m][i];
      }
    });
    ExpectProduct(other, other.w, 0, x_other, 1, y_other);
    for (int m = 0; m < kMlps; ++m) {
      SCOPED_TRACE(m);
      EXPECT_EQ(calls[m].load(), 1);
      if (tokens[m] == 0) continue;
      ExpectProduct(gates[m], gates[m].w, 0, x[m], tokens[m], g[m]);
      ExpectProduct(ups[m], ups[m].w, 0, x[m], tokens[m], u[m]);
      for (size_t i = 0; i < act[m].size(); ++i) {
        const double want = g[m][i] / (1.0 + std::exp(-static_cast<double>(g[m][i]))) * u[m][i];
        ASSERT_NEAR(act[m][i], want, 1e-5 * (std::fabs(want) + 1e-3)) << i;
      }
      ExpectProduct(downs[m], downs[m].w, 0, act[m], tokens[m], y[m]);
    }
  }
}

// Packed BF16 and FP8 weights in every place a weight goes: row views on and off a panel boundary (off
// one, the view falls back to the row-major bytes), MatMulBatch beside unpacked jobs, and
// MatMulTransposed (which reads the row-major bytes) on a packed weight. On CPUs without AVX-512
// PackPanels leaves the weight as it was, and the same products must come out.
TEST_P(SimdTest, PackedPanelsGiveTheSameProductsEverywhere) {
  for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    SCOPED_TRACE(DTypeName(dtype));
    Stored s = MakeWeight(dtype, 150, 270, 41);
    Stored other = MakeWeight(DType::kF32, 33, 270, 42);
    WeightArena packed;
    PackPanels(&s.w, &packed);
    EXPECT_EQ(s.w.panels != nullptr, ActiveSimd() >= Simd::kAvx512);
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{64, 150}, {32, 64}, {10, 100}}) {
      const LinearWeight view = s.w.Rows(begin, end);
      EXPECT_EQ(view.panels != nullptr, s.w.panels != nullptr && begin % kPanelRows == 0);
      for (int64_t n : {1, 7, 20, 80, 100}) {
        const std::vector<float> x = RandomVector(n * 270, 7);
        std::vector<float> y(static_cast<size_t>(n * view.rows));
        MatMul(x.data(), n, view, y.data());
        ExpectProduct(s, view, begin, x, n, y);
      }
    }
    const std::vector<float> xa = RandomVector(3 * 270, 8), xb = RandomVector(14 * 270, 9),
                             xc = RandomVector(2 * 270, 10);
    std::vector<float> ya(3 * 150), yb(14 * 150), yc(2 * 33);
    const MatMulJob jobs[] = {{xa.data(), 3, &s.w, ya.data()},
                              {xb.data(), 14, &s.w, yb.data()},
                              {xc.data(), 2, &other.w, yc.data()}};
    MatMulBatch(jobs);
    ExpectProduct(s, s.w, 0, xa, 3, ya);
    ExpectProduct(s, s.w, 0, xb, 14, yb);
    ExpectProduct(other, other.w, 0, xc, 2, yc);
    const std::vector<float> xt = RandomVector(2 * 150, 11);
    std::vector<float> yt(static_cast<size_t>(2 * 270));
    MatMulTransposed(xt.data(), 2, s.w, yt.data());
    const std::vector<double> want = TransposedReference(s, xt, 2);
    for (size_t i = 0; i < yt.size(); ++i) {
      ASSERT_NEAR(yt[i], want[i], 1e-5 * (std::fabs(want[i]) + 10));
    }
  }
}

// A few tokens multiply several panels at a time (up to 6 tokens BF16, 4 FP8; four panels for
// one token), the rest in smaller groups: groups whose last panel is partial (rows 100 and 50 of a
// view), whose panels sit in different FP8 scale blocks (the view from row 96), 7 panels
// (4 + 2 + 1), odd columns, a last panel alone; through MatMul (parallel tasks of panel groups)
// and MatMulBatch (chunks of panel groups), against the double-precision product of the decoded
// weight.
TEST_P(SimdTest, FewTokenPanelGroupsMatchTheReference) {
  for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    SCOPED_TRACE(DTypeName(dtype));
    Stored s = MakeWeight(dtype, 2100, 301, 43);
    WeightArena packed;
    PackPanels(&s.w, &packed);
    for (int64_t n = 1; n <= 7; ++n) {
      SCOPED_TRACE(n);
      for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 2100}, {96, 300}, {0, 100},
                                {0, 224}, {0, 130}, {32, 82}, {64, 96}}) {
        SCOPED_TRACE(begin);
        const LinearWeight view = s.w.Rows(begin, end);
        const std::vector<float> x = RandomVector(n * 301, 12 + static_cast<uint32_t>(n));
        std::vector<float> y(static_cast<size_t>(n * view.rows), NAN);
        MatMul(x.data(), n, view, y.data());
        ExpectProduct(s, view, begin, x, n, y);
        std::vector<float> yb(y.size(), NAN), yc(y.size(), NAN);
        const MatMulJob jobs[] = {{x.data(), n, &view, yb.data()}, {x.data(), n, &view, yc.data()}};
        MatMulBatch(jobs);
        ExpectProduct(s, view, begin, x, n, yb);
        ExpectProduct(s, view, begin, x, n, yc);
      }
    }
  }
}

// PackPanelsContiguous: the weights it can pack get panels one after another in one buffer, in
// order; the others (F32, an FP8 view off a panel boundary) are left to their row-major bytes;
// every product is as before.
TEST_P(SimdTest, ContiguousPanelsGiveTheSameProducts) {
  Stored bf16 = MakeWeight(DType::kBF16, 70, 130, 51);
  Stored f32 = MakeWeight(DType::kF32, 40, 130, 52);
  Stored fp8 = MakeWeight(DType::kF8E4M3, 200, 130, 53);
  std::vector<LinearWeight> ws = {bf16.w, f32.w, fp8.w.Rows(10, 90), fp8.w.Rows(128, 200)};
  const int64_t firsts[] = {0, 0, 10, 128};
  const Stored* owners[] = {&bf16, &f32, &fp8, &fp8};
  for (LinearWeight& w : ws) w.panels = nullptr;
  WeightArena storage;
  PackPanelsContiguous(ws, &storage);
  const bool avx512 = ActiveSimd() >= Simd::kAvx512;
  EXPECT_EQ(ws[0].panels != nullptr, avx512);
  EXPECT_EQ(ws[1].panels, nullptr);
  EXPECT_EQ(ws[2].panels, nullptr);  // first row 10: FP8 panels must start on a scale block's
  EXPECT_EQ(ws[3].panels != nullptr, avx512);
  if (avx512) {
    // BF16: 3 panels of 32 rows × 130 columns × 2 bytes, then the FP8 view's.
    EXPECT_EQ(static_cast<const uint8_t*>(ws[3].panels),
              static_cast<const uint8_t*>(ws[0].panels) + 3 * 32 * 130 * 2);
  }
  for (size_t i = 0; i < ws.size(); ++i) {
    for (int64_t n : {1, 5, 30}) {
      const std::vector<float> x = RandomVector(n * 130, 60 + static_cast<uint32_t>(i));
      std::vector<float> y(static_cast<size_t>(n * ws[i].rows));
      MatMul(x.data(), n, ws[i], y.data());
      ExpectProduct(*owners[i], ws[i], firsts[i], x, n, y);
    }
  }
}

// The panel kernels convert E4M3 exponent code 0 (zero, ±0, the subnormals) inexactly and add the
// difference afterwards (Fp8PanelFix): rows made of those codes only, a few more scattered, in the
// first, a middle and the last partial panel, with an odd last column, and a row of every code;
// every path (1-8 tokens, the converted panels from 24) and row views must give the exact codes'
// products, each within 1e-5 of Σ|w·x| (its rounding's scale): a missing fix is as large as the
// small codes themselves.
TEST_P(SimdTest, Fp8ZeroAndSubnormalCodesAreExactOnPanels) {
  constexpr int64_t kRows = 100, kCols = 301;
  Stored s = MakeWeight(DType::kF8E4M3, kRows, kCols, 71);
  const uint8_t codes[] = {0x00, 0x80, 0x01, 0x81, 0x02, 0x82, 0x03, 0x83,
                           0x04, 0x84, 0x05, 0x85, 0x06, 0x86, 0x07, 0x87};
  for (int64_t r : {5, 70, 97}) {
    for (int64_t c = 0; c < kCols; ++c) s.bytes[r * kCols + c] = codes[(r + c) % 16];
  }
  for (int64_t i = 11; i < kRows * kCols; i += 97) s.bytes[i] = codes[i % 16];
  // Row 40: every code but the two NaN codes, in turn.
  std::vector<uint8_t> all;
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) != 0x7f) all.push_back(static_cast<uint8_t>(code));
  }
  for (int64_t c = 0; c < kCols; ++c) s.bytes[40 * kCols + c] = all[c % all.size()];
  const int64_t scale_cols = s.w.scale_cols();
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t c = 0; c < kCols; ++c) {
      s.dense[r * kCols + c] = static_cast<double>(F8E4M3ToF32(s.bytes[r * kCols + c])) *
                               s.scales[(r / 128) * scale_cols + c / 128];
    }
  }
  WeightArena packed;
  PackPanels(&s.w, &packed);
  EXPECT_EQ(s.w.panels != nullptr, ActiveSimd() >= Simd::kAvx512);
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, kRows}, {64, 100}, {0, 32}}) {
    SCOPED_TRACE(begin);
    const LinearWeight view = s.w.Rows(begin, end);
    for (int64_t n : {1, 2, 3, 4, 5, 8, 11, 24, 30}) {
      SCOPED_TRACE(n);
      const std::vector<float> x = RandomVector(n * kCols, 80 + static_cast<uint32_t>(n));
      std::vector<float> y(static_cast<size_t>(n * view.rows), NAN), yb(y.size(), NAN);
      MatMul(x.data(), n, view, y.data());
      const MatMulJob jobs[] = {{x.data(), n, &view, yb.data()}};
      MatMulBatch(jobs);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < view.rows; ++r) {
          double want = 0, scale = 0;
          for (int64_t k = 0; k < kCols; ++k) {
            const double term = s.dense[(begin + r) * kCols + k] * x[t * kCols + k];
            want += term;
            scale += std::fabs(term);
          }
          ASSERT_NEAR(y[t * view.rows + r], want, 1e-5 * scale) << "token " << t << " row " << r;
          ASSERT_NEAR(yb[t * view.rows + r], want, 1e-5 * scale) << "token " << t << " row " << r;
        }
      }
    }
  }
}

// A weight mostly of exponent code 0 would need more fixes than converting every code costs: it
// stays on the row-major kernels, exact all the same.
TEST_P(SimdTest, Fp8WeightsOfMostlyZeroCodesStayRowMajor) {
  Stored s = MakeWeight(DType::kF8E4M3, 64, 128, 72);
  for (int64_t i = 0; i < 64 * 128; ++i) {
    if (i % 8 != 0) s.bytes[i] = (i % 3 == 0) ? 0x80 : 0x00;
  }
  WeightArena packed;
  PackPanels(&s.w, &packed);
  EXPECT_EQ(s.w.panels, nullptr);
  const std::vector<float> x = RandomVector(2 * 128, 9);
  std::vector<float> y(2 * 64);
  MatMul(x.data(), 2, s.w, y.data());
  for (int64_t t = 0; t < 2; ++t) {
    for (int64_t r = 0; r < 64; ++r) {
      double want = 0;
      for (int64_t k = 0; k < 128; k += 8) {
        want += static_cast<double>(F8E4M3ToF32(s.bytes[r * 128 + k])) *
                s.scales[k / 128] * x[t * 128 + k];
      }
      EXPECT_NEAR(y[t * 64 + r], want, 1e-5 * (std::fabs(want) + 1)) << t << " " << r;
    }
  }
}

TEST_P(SimdTest, Fp8NanCodesPoisonExactlyTheOutputsTheyFeed) {
  for (bool panels : {false, true}) {
    SCOPED_TRACE(panels ? "panels" : "rows");
    Stored s = MakeWeight(DType::kF8E4M3, 40, 300, 31);
    s.bytes[7 * 300 + 211] = 0x7f;  // +NaN in row 7, column 211
    s.bytes[30 * 300 + 5] = 0xff;   // -NaN in row 30, column 5
    s.bytes[12 * 300 + 290] = 0x7f;  // +NaN in row 12's last partial chunk (column 290)
    WeightArena packed;
    if (panels) PackPanels(&s.w, &packed);  // after the NaN codes are in (where AVX-512 packs)
    for (int64_t n : {1, 2, 5, 8, 20, 70, 100}) {
      std::vector<float> xn = RandomVector(n * 300, 6), yn(static_cast<size_t>(n * 40));
      MatMul(xn.data(), n, s.w, yn.data());
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < 40; ++r) {
          EXPECT_EQ(std::isnan(yn[t * 40 + r]), r == 7 || r == 12 || r == 30)
              << "n " << n << " row " << r;
        }
      }
    }
    std::vector<float> row(300);
    DequantizeRows(s.w, 7, 8, row.data());
    for (int64_t c = 0; c < 300; ++c) EXPECT_EQ(std::isnan(row[c]), c == 211) << c;
    const std::vector<float> xt = RandomVector(40, 8);
    std::vector<float> yt(300);
    MatMulTransposed(xt.data(), 1, s.w, yt.data());
    for (int64_t c = 0; c < 300; ++c) {
      EXPECT_EQ(std::isnan(yt[c]), c == 211 || c == 5 || c == 290) << c;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, SimdTest, ::testing::Values("scalar", "avx2", "avx512", "avx512vbmi"));

TEST(GemmF32Test, StridedProductsMatchTheDoublePrecisionReference) {
  // A [5, 7] inside rows of 9; B [6, 7] (transposed) or [7, 6] inside rows of 8; C inside rows of 10.
  const std::vector<float> a = RandomVector(5 * 9, 1), b = RandomVector(7 * 8, 2);
  for (bool transposed : {true, false}) {
    std::vector<float> c(5 * 10, -1.0f);
    GemmF32(5, 6, 7, 0.5f, a.data(), 9, b.data(), 8, transposed, c.data(), 10);
    for (int64_t i = 0; i < 5; ++i) {
      for (int64_t j = 0; j < 6; ++j) {
        double want = 0;
        for (int64_t k = 0; k < 7; ++k) {
          want += static_cast<double>(a[i * 9 + k]) * (transposed ? b[j * 8 + k] : b[k * 8 + j]);
        }
        EXPECT_NEAR(c[i * 10 + j], 0.5 * want, 1e-5) << i << "," << j;
      }
      EXPECT_EQ(c[i * 10 + 6], -1.0f);  // outside the product: untouched
    }
  }
}

}  // namespace
}  // namespace epinfer
