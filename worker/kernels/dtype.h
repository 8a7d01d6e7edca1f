#ifndef EPINFER_WORKER_KERNELS_DTYPE_H_
#define EPINFER_WORKER_KERNELS_DTYPE_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/string_view.h"

namespace epinfer {

// Element types of tensors in checkpoints and in memory. Names follow safetensors.
enum class DType : uint8_t { kF32, kF16, kBF16, kF8E4M3, kI32, kI64, kU8 };

// Bytes per element.
int DTypeSize(DType dtype);
// "F32", "BF16", "F8_E4M3", ... as safetensors spells them.
absl::string_view DTypeName(DType dtype);
// false for a name safetensors uses that epinfer does not read.
bool ParseDType(absl::string_view name, DType* dtype);

// Where a tensor's bytes live. Kernels for other devices implement the same interfaces.
enum class Device : uint8_t { kHost, kCuda };

inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, as PyTorch converts; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float F16ToF32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  uint32_t u;
  std::memcpy(&u, &magnitude, sizeof u);
  u |= sign;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// FP8 E4M3 ("fn": no infinities, S.1111.111 is NaN, largest finite 448), the format of
// DeepSeek-V3's FP8 checkpoints. The exponent/mantissa bits placed into a float32 and scaled by
// 2^120 (= 2^(127-7)) give normals and subnormals alike.
inline float F8E4M3ToF32(uint8_t v) {
  if ((v & 0x7f) == 0x7f) return NAN;
  uint32_t u = static_cast<uint32_t>(v & 0x7f) << 20;
  float f;
  std::memcpy(&f, &u, sizeof f);
  f *= 0x1p120f;
  return (v & 0x80) ? -f : f;
}

// Nearest E4M3 value, ties to even; saturates at ±448 (the convention of FP8 quantizers).
// Inline: the FP8 dispatch encodes every activation through it.
inline uint8_t F32ToF8E4M3(float f) {
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


// FP8 weights are scaled per 128×128 block (DeepSeek-V3 `weight_scale_inv`).
inline constexpr int kFp8BlockSize = 128;

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_DTYPE_H_
