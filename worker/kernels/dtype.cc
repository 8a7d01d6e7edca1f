#include "worker/kernels/dtype.h"

namespace epinfer {

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
    case DType::kU8:
      return 1;
    case DType::kI64:
      return 8;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
  }
  return "?";
}

bool ParseDType(absl::string_view name, DType* dtype) {
  static constexpr DType kAll[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3,
                                   DType::kI32, DType::kI64, DType::kU8};
  for (DType d : kAll) {
    if (DTypeName(d) == name) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

uint8_t F32ToF8E4M3(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7f;   // NaN
  if (u >= 0x43e00000u) return sign | 0x7e;  // ≥ 448 (and ∞) saturates
  if (u < 0x3c800000u) {
    // Below the smallest normal 2^-6: multiples of 2^-9, rounded to nearest even (the default
    // rounding mode); 8 × 2^-9 is the smallest normal, code 0x08, so the carry is right too.
    float magnitude;
    std::memcpy(&magnitude, &u, sizeof magnitude);
    return sign | static_cast<uint8_t>(std::nearbyint(magnitude * 512.0f));
  }
  // Normal: keep 3 mantissa bits, ties to even; a carry moves into the exponent.
  const uint32_t rounded = (u + 0x7ffffu + ((u >> 20) & 1u)) & 0xfff00000u;
  const int exponent = static_cast<int>(rounded >> 23) - 120;  // f32 bias 127, e4m3 bias 7
  const uint8_t mantissa = static_cast<uint8_t>((rounded >> 20) & 7u);
  if (exponent > 15 || (exponent == 15 && mantissa == 7)) return sign | 0x7e;
  return sign | static_cast<uint8_t>(exponent << 3) | mantissa;
}

}  // namespace epinfer
