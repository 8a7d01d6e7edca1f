#include "worker/kernels/dtype.h"

#include <cmath>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

// Values from the format definitions: BF16 is the top half of an IEEE float32; E4M3 ("fn") has
// bias 7, 3 mantissa bits, no infinities and S.1111.111 = NaN (OCP FP8 spec, table 1).
TEST(DTypeTest, Bf16IsTheTopHalfOfFloat32) {
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToF32(0xc000), -2.0f);
  EXPECT_EQ(Bf16ToF32(0x4049), 3.140625f);
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even gives 1.0.
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3f80);
  EXPECT_EQ(F32ToBf16(1.01171875f), 0x3f82);  // halfway between 0x3f81 and 0x3f82 → even
}

TEST(DTypeTest, F16DecodesNormalsSubnormalsAndSpecials) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

TEST(DTypeTest, E4M3DecodesEveryCodeByTheFormula) {
  for (int code = 0; code < 256; ++code) {
    const int sign = code >> 7, exponent = (code >> 3) & 0xf, mantissa = code & 7;
    const float got = F8E4M3ToF32(static_cast<uint8_t>(code));
    if (exponent == 15 && mantissa == 7) {
      EXPECT_TRUE(std::isnan(got)) << code;
      continue;
    }
    const double magnitude = exponent == 0 ? std::ldexp(mantissa / 8.0, -6)
                                           : std::ldexp(1.0 + mantissa / 8.0, exponent - 7);
    EXPECT_EQ(got, static_cast<float>(sign ? -magnitude : magnitude)) << code;
  }
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x38), 1.0f);
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));
}

TEST(DTypeTest, E4M3EncodeRoundsToNearestAndSaturates) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;
    const float v = F8E4M3ToF32(static_cast<uint8_t>(code));
    if (v == 0.0f) continue;  // ±0 both decode to zero
    EXPECT_EQ(F32ToF8E4M3(v), code) << v;
  }
  EXPECT_EQ(F32ToF8E4M3(1000.0f), 0x7e);
  EXPECT_EQ(F32ToF8E4M3(-1000.0f), 0xfe);
  EXPECT_EQ(F8E4M3ToF32(F32ToF8E4M3(1.06f)), 1.0f);     // nearer to 1.0 than 1.125
  EXPECT_EQ(F8E4M3ToF32(F32ToF8E4M3(1.0625f)), 1.0f);   // tie → even mantissa (1.0)
  EXPECT_EQ(F8E4M3ToF32(F32ToF8E4M3(1.1875f)), 1.25f);  // tie → even mantissa (1.25)
}

TEST(DTypeTest, E4M3EncodeIsTheNearestCodeForASweepOfValues) {
  // Brute force: the nearest of all finite codes (ties to the even code), against the encoder.
  for (int i = -20000; i <= 20000; ++i) {
    const float v = std::ldexp(static_cast<float>(i), -7) * 0.173f;
    int best = 0;
    for (int code = 0; code < 0x7f; ++code) {
      const float d = std::fabs(F8E4M3ToF32(static_cast<uint8_t>(code)) - std::fabs(v));
      const float bd = std::fabs(F8E4M3ToF32(static_cast<uint8_t>(best)) - std::fabs(v));
      if (d < bd || (d == bd && (code & 1) == 0 && (best & 1) == 1)) best = code;
    }
    if (std::fabs(v) >= 448.0f) best = 0x7e;
    const int expected = (v < 0 || std::signbit(v)) && best != 0 ? (best | 0x80) : best;
    ASSERT_EQ(F32ToF8E4M3(v) & 0x7f, expected & 0x7f) << v;
  }
}

TEST(DTypeTest, NamesRoundTrip) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kI32,
                  DType::kI64, DType::kU8}) {
    DType parsed;
    ASSERT_TRUE(ParseDType(DTypeName(d), &parsed));
    EXPECT_EQ(parsed, d);
  }
  DType unused;
  EXPECT_FALSE(ParseDType("F4", &unused));
}

}  // namespace
}  // namespace epinfer
