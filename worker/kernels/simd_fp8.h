#ifndef EPINFER_WORKER_KERNELS_SIMD_FP8_H_
#define EPINFER_WORKER_KERNELS_SIMD_FP8_H_

// Vector building blocks shared by the kernels that read FP8 E4M3 (weights in linear.cc,
// activations in activation_codec.cc). Each carries its own target attribute: the files that
// include this one are compiled for baseline x86-64 and call these only behind ActiveSimd().

#include <immintrin.h>

#include <cstdint>

#include "worker/kernels/simd.h"

namespace epinfer {

// FP8 E4M3 read as FP16: sign-extend the byte to 16 bits and shift exponent and mantissa into FP16
// position; with E4M3's bias 7 under FP16's bias 15 that is the value × 2^-8, subnormals included
// (the F16 conversion instructions handle them). Kernels multiply the block scale by 2^8, which is
// exact. NaN codes (S.1111.111) come out as ±1.875, so callers detect them separately.
inline constexpr float kFp8Unscale = 256.0f;
inline constexpr uint8_t kFp8NanCode = 0x7f;

// The first k of 16 lanes (k ≤ 16).
EPINFER_TARGET_AVX512 inline __mmask16 Lanes16(int64_t k) {
  return static_cast<__mmask16>((1u << k) - 1);
}

// 16 FP8 values × 2^-8.
EPINFER_TARGET_AVX512 inline __m512 Fp8ToF32Scaled16(__m128i bytes) {
  const __m256i h = _mm256_cvtepi8_epi16(bytes);
  return _mm512_cvtph_ps(
      _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF))));
}

// 16 FP8 values × 2^-8 into two vectors of 8.
EPINFER_TARGET_AVX2 inline void Fp8ToF32Scaled8x2(__m128i bytes, __m256* lo, __m256* hi) {
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7),
                                     _mm256_set1_epi16(static_cast<short>(0xBFFF)));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_SIMD_FP8_H_
