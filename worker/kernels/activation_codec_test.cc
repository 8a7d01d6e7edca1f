#include "worker/kernels/activation_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/kernels/dtype.h"
#include "worker/kernels/simd.h"

namespace epinfer {
namespace {

// The references: dtype.h's scalar conversions, element by element, in the wire format.
std::vector<uint8_t> ReferenceFp8(const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size()), groups = (n + 127) / 128;
  std::vector<uint8_t> out(static_cast<size_t>(groups * 4 + n));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t begin = g * 128, end = std::min(n, begin + 128);
    float amax = 0;
    for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float scale = amax > 0 ? amax / 448.0f : 1.0f;
    const float inverse = 1.0f / scale;
    std::memcpy(out.data() + g * 4, &scale, 4);
    for (int64_t i = begin; i < end; ++i) out[groups * 4 + i] = F32ToF8E4M3(x[i] * inverse);
  }
  return out;
}

// x[i] (+)= F8E4M3ToF32(byte) * scale.
void ReferenceDecodeFp8(const std::vector<uint8_t>& in, bool add, std::vector<float>* x) {
  const int64_t n = static_cast<int64_t>(x->size()), groups = (n + 127) / 128;
  for (int64_t i = 0; i < n; ++i) {
    float scale;
    std::memcpy(&scale, in.data() + i / 128 * 4, 4);
    const float v = F8E4M3ToF32(in[groups * 4 + i]) * scale;
    (*x)[i] = add ? (*x)[i] + v : v;
  }
}

std::vector<uint8_t> ReferenceBf16(const std::vector<float>& x) {
  std::vector<uint8_t> out(2 * x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t b = F32ToBf16(x[i]);
    std::memcpy(out.data() + 2 * i, &b, 2);
  }
  return out;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Encoded bytes equal, reporting the first difference.
::testing::AssertionResult SameBytes(const std::vector<uint8_t>& got,
                                     const std::vector<uint8_t>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " bytes, want " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return ::testing::AssertionFailure()
             << "byte " << i << ": 0x" << std::hex << int{got[i]} << ", want 0x" << int{want[i]};
    }
  }
  return ::testing::AssertionSuccess();
}

// Floats equal bit for bit (NaNs included), reporting the first difference.
::testing::AssertionResult SameBits(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (BitsOf(got[i]) != BitsOf(want[i])) {
      return ::testing::AssertionFailure()
             << "element " << i << ": " << got[i] << " (0x" << std::hex << BitsOf(got[i])
             << "), want " << want[i] << " (0x" << BitsOf(want[i]) << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs each test at one SIMD level; levels the CPU lacks are skipped.
class ActivationCodecTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!SetSimdLevel(GetParam())) GTEST_SKIP() << "this CPU lacks " << GetParam();
  }
  void TearDown() override { SetSimdLevel(best_); }

  // Encodes at an odd address (rows need no alignment) and compares with the reference.
  ::testing::AssertionResult Fp8MatchesReference(const std::vector<float>& x) {
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<uint8_t> buffer(static_cast<size_t>(Fp8RowBytes(n) + 1));
    EncodeFp8Row(x.data(), n, buffer.data() + 1);
    return SameBytes(std::vector<uint8_t>(buffer.begin() + 1, buffer.end()), ReferenceFp8(x));
  }

  ::testing::AssertionResult Bf16MatchesReference(const std::vector<float>& x) {
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<uint8_t> buffer(static_cast<size_t>(2 * n + 1));
    EncodeBf16Row(x.data(), n, buffer.data() + 1);
    return SameBytes(std::vector<uint8_t>(buffer.begin() + 1, buffer.end()), ReferenceBf16(x));
  }

 private:
  const char* best_ = SimdLevel();
};

// Groups of 128 led by 448, so every group's scale is 1 and the other 127 values reach the E4M3
// conversion unscaled; values above 448 would change the scale and are left out.
std::vector<float> WithUnitScale(const std::vector<float>& values) {
  std::vector<float> row;
  for (float v : values) {
    if (std::fabs(v) > 448.0f) continue;
    if (row.size() % 128 == 0) row.push_back(448.0f);
    row.push_back(v);
  }
  return row;
}

std::vector<float> AllBf16Values() {
  std::vector<float> x;
  for (uint32_t b = 0; b < 65536; ++b) x.push_back(Bf16ToF32(static_cast<uint16_t>(b)));
  return x;
}

TEST_P(ActivationCodecTest, Fp8EncodesEveryBf16ValueAsTheScalarCodeDoes) {
  // Unscaled: every bf16 value ≤ 448 and every NaN straight through the conversion.
  EXPECT_TRUE(Fp8MatchesReference(WithUnitScale(AllBf16Values())));
  // In bit order each group of 128 is one binade of one sign, so the group scales vary too
  // (including the infinities' and NaNs' groups).
  EXPECT_TRUE(Fp8MatchesReference(AllBf16Values()));
}

TEST_P(ActivationCodecTest, Fp8RoundsTiesToEvenSaturatesAndKeepsSubnormals) {
  std::vector<float> v = {0.0f, -0.0f, NAN, -NAN, INFINITY, -INFINITY, 448.0f, -448.0f,
                          std::nextafter(448.0f, 0.0f), 447.0f, 0x1p-6f, 0x1.fffffep-7f, 0x1p-9f,
                          0x1p-11f, 1e-38f, std::numeric_limits<float>::denorm_min()};
  // Signalling and quiet NaNs of both signs.
  for (uint32_t nan : {0x7f800001u, 0xff800001u, 0x7fffffffu, 0xffffffffu}) {
    v.push_back(FromBits(nan));
  }
  // Every midpoint between neighbouring E4M3 values, and its f32 neighbours: ties go to the even
  // code, the carry of the largest mantissa moves into the next exponent, and the midpoints of
  // the subnormals and of the smallest normal take the other rounding path.
  for (int c = 0; c < 0x7e; ++c) {
    const float mid =
        (F8E4M3ToF32(static_cast<uint8_t>(c)) + F8E4M3ToF32(static_cast<uint8_t>(c + 1))) / 2;
    for (float m : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      v.push_back(m);
      v.push_back(-m);
    }
  }
  // Half the smallest subnormal (a tie to zero) and just above it.
  v.push_back(0x1p-10f);
  v.push_back(std::nextafter(0x1p-10f, 1.0f));
  EXPECT_TRUE(Fp8MatchesReference(WithUnitScale(v)));
  // The same values scaled by their groups' amax, with values above 448 that set the scales (the
  // midpoint towards 480 and its neighbours).
  v.push_back(464.0f);
  v.push_back(std::nextafter(464.0f, 0.0f));
  v.push_back(-std::nextafter(464.0f, INFINITY));
  EXPECT_TRUE(Fp8MatchesReference(v));
}

TEST_P(ActivationCodecTest, Fp8EncodesRandomRowsOfEveryLengthAsTheScalarCodeDoes) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> exponent(-40.0f, 40.0f);
  for (int64_t n : {1, 5, 127, 128, 129, 7168, 7169}) {
    // Activations with the channel outliers that set a group's scale far above most values.
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(rng) * (bits(rng) % 64 == 0 ? 100.0f : 1.0f);
    EXPECT_TRUE(Fp8MatchesReference(x)) << "hidden " << n;
    // Magnitudes over 80 binades, so the groups reach the subnormals.
    for (float& v : x) v = normal(rng) * std::exp2(exponent(rng));
    EXPECT_TRUE(Fp8MatchesReference(x)) << "hidden " << n << ", wide range";
    // Arbitrary bit patterns: NaNs, infinities and f32 subnormals anywhere.
    for (float& v : x) v = FromBits(bits(rng));
    EXPECT_TRUE(Fp8MatchesReference(x)) << "hidden " << n << ", random bits";
    // All-zero groups (scale 1), the partial last group included.
    for (int64_t i = 0; i < n; ++i) {
      if ((i / 128) % 2 == 1 || i >= n / 128 * 128) x[i] = (i % 2) ? -0.0f : 0.0f;
    }
    EXPECT_TRUE(Fp8MatchesReference(x)) << "hidden " << n << ", zero groups";
  }
}

TEST_P(ActivationCodecTest, Fp8DecodesAllCodesAsTheScalarCodeDoes) {
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> exponent(-140.0f, 120.0f);
  for (int64_t n : {1, 5, 127, 128, 129, 256, 7168, 7169}) {
    const int64_t groups = (n + 127) / 128;
    std::vector<uint8_t> row(static_cast<size_t>(Fp8RowBytes(n)));
    ASSERT_EQ(row.size(), static_cast<size_t>(groups * 4 + n));
    for (int64_t g = 0; g < groups; ++g) {
      // Scales from subnormal products to overflowing ones, and the exact 1 and 448 / 448.
      const float scale = g == 0 ? 1.0f : g == 1 ? 1.0f / 3 : std::exp2(exponent(rng)) * 1.37f;
      std::memcpy(row.data() + g * 4, &scale, 4);
    }
    for (int64_t i = 0; i < n; ++i) row[groups * 4 + i] = static_cast<uint8_t>(i * 7 + i / 256);
    std::vector<float> got(static_cast<size_t>(n)), want(got.size());
    DecodeFp8Row(row.data(), n, got.data());
    ReferenceDecodeFp8(row, /*add=*/false, &want);
    EXPECT_TRUE(SameBits(got, want)) << "hidden " << n;

    std::normal_distribution<float> normal;
    for (float& v : got) v = normal(rng);
    want = got;
    DecodeAddFp8Row(row.data(), n, got.data());
    ReferenceDecodeFp8(row, /*add=*/true, &want);
    EXPECT_TRUE(SameBits(got, want)) << "hidden " << n << ", add";
  }
}

TEST_P(ActivationCodecTest, Fp8RowsRoundTripThroughEncodeAndDecode) {
  // The decoder reads the encoder's scales: a row of exact E4M3 values × 448 / amax comes back.
  std::vector<float> x;
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) != 0x7f) x.push_back(F8E4M3ToF32(static_cast<uint8_t>(c)));
  }
  std::vector<uint8_t> row(static_cast<size_t>(Fp8RowBytes(static_cast<int64_t>(x.size()))));
  EncodeFp8Row(x.data(), static_cast<int64_t>(x.size()), row.data());
  std::vector<float> y(x.size());
  DecodeFp8Row(row.data(), static_cast<int64_t>(x.size()), y.data());
  EXPECT_TRUE(SameBits(y, x));
}

TEST_P(ActivationCodecTest, Bf16EncodesRoundingTiesAndNansAsTheScalarCodeDoes) {
  // Every bf16 pattern with the low halves that decide the rounding: exact, just below a tie, the
  // tie, just above it, the largest; 0x7f7fffff rounds to infinity, 0x7f800001 is a NaN that
  // only its low half makes one.
  std::vector<float> x;
  for (uint32_t b = 0; b < 65536; ++b) {
    for (uint32_t low : {0x0000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, 0x0001u}) {
      x.push_back(FromBits(b << 16 | low));
    }
  }
  EXPECT_TRUE(Bf16MatchesReference(x));
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int64_t n : {1, 5, 7, 8, 15, 16, 17, 127, 7168, 7169}) {
    std::vector<float> row(static_cast<size_t>(n));
    for (float& v : row) v = FromBits(bits(rng));
    EXPECT_TRUE(Bf16MatchesReference(row)) << "hidden " << n;
  }
}

TEST_P(ActivationCodecTest, Bf16DecodesEveryPatternAndAddsAsTheScalarCodeDoes) {
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  for (int64_t n : {1, 5, 7, 8, 9, 15, 16, 17, 7168, 65536 + 3}) {
    // Rows at an odd address; every 16-bit pattern once n reaches 65536.
    std::vector<uint8_t> buffer(static_cast<size_t>(2 * n + 1));
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t b = static_cast<uint16_t>(n > 65536 ? i : rng());
      std::memcpy(buffer.data() + 1 + 2 * i, &b, 2);
    }
    const uint8_t* row = buffer.data() + 1;
    std::vector<float> got(static_cast<size_t>(n)), want(got.size());
    DecodeBf16Row(row, n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, row + 2 * i, 2);
      want[i] = Bf16ToF32(b);
    }
    EXPECT_TRUE(SameBits(got, want)) << "hidden " << n;

    for (float& v : got) v = normal(rng);
    want = got;
    DecodeAddBf16Row(row, n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, row + 2 * i, 2);
      want[i] = want[i] + Bf16ToF32(b);
    }
    EXPECT_TRUE(SameBits(got, want)) << "hidden " << n << ", add";
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, ActivationCodecTest,
                         ::testing::Values("scalar", "avx2", "avx512", "avx512vbmi"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace epinfer
