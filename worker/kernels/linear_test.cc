#include "worker/kernels/linear.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

struct Stored {
  LinearWeight w;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  std::vector<double> dense;  // the exact values W holds, for the reference product
};

// A random weight in `dtype`; `dense` holds exactly the values the encoding represents, decoded
// with the scalar format conversions (tested in dtype_test against the format definitions).
Stored MakeWeight(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Stored s;
  s.w.dtype = dtype;
  s.w.rows = rows;
  s.w.cols = cols;
  s.bytes.resize(static_cast<size_t>(rows * cols * DTypeSize(dtype)));
  s.dense.resize(static_cast<size_t>(rows * cols));
  const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
  if (dtype == DType::kF8E4M3) {
    s.scales.resize(static_cast<size_t>(sr * sc));
    for (float& v : s.scales) v = std::ldexp(1.0f, static_cast<int>(rng() % 5) - 8);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      const float v = normal(rng);
      switch (dtype) {
        case DType::kF32:
          std::memcpy(&s.bytes[i * 4], &v, 4);
          s.dense[i] = v;
          break;
        case DType::kBF16: {
          uint16_t b = F32ToBf16(v);
          std::memcpy(&s.bytes[i * 2], &b, 2);
          s.dense[i] = Bf16ToF32(b);
          break;
        }
        case DType::kF8E4M3: {
          uint8_t q = F32ToF8E4M3(v * 16);
          s.bytes[i] = q;
          s.dense[i] = static_cast<double>(F8E4M3ToF32(q)) * s.scales[(r / 128) * sc + c / 128];
          break;
        }
        default:
          break;
      }
    }
  }
  s.w.data = s.bytes.data();
  s.w.scale_inv = s.scales.empty() ? nullptr : s.scales.data();
  return s;
}

struct Case {
  const char* simd;
  DType dtype;
  int64_t n, rows, cols;
};

class MatMulTest : public ::testing::TestWithParam<Case> {};

TEST_P(MatMulTest, MatchesTheDoublePrecisionProductOfTheDecodedWeight) {
  const Case c = GetParam();
  if (!SetSimdLevel(c.simd)) GTEST_SKIP() << "this CPU lacks " << c.simd;
  Stored s = MakeWeight(c.dtype, c.rows, c.cols, 7);
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
  SetSimdLevel("avx512") || SetSimdLevel("avx2");
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const char* simd : {"scalar", "avx2", "avx512"}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF8E4M3}) {
      // Decode-sized (streamed, with odd tails and partial FP8 blocks) and prefill-sized (sgemm).
      for (int64_t n : {1, 3, 5, 40}) cases.push_back({simd, dtype, n, 200, 300});
      cases.push_back({simd, dtype, 2, 17, 7});
    }
  }
  return cases;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(c.simd) + "_" + std::string(DTypeName(c.dtype) == "F8_E4M3" ? "F8" : DTypeName(c.dtype)) +
         "_n" + std::to_string(c.n) + "_" + std::to_string(c.rows) + "x" + std::to_string(c.cols);
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

}  // namespace
}  // namespace epinfer
