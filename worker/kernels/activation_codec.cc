#include "worker/kernels/activation_codec.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "worker/kernels/dtype.h"
#include "worker/kernels/simd.h"
#include "worker/kernels/simd_fp8.h"

// Built with -ffp-contract=off: decode-and-add must round the product and the sum separately, as
// the scalar code does, and the AVX paths enable FMA.

namespace epinfer {
namespace {

constexpr int64_t kGroup = kFp8BlockSize;
constexpr float kE4M3Max = 448.0f;

int64_t Groups(int64_t n) { return (n + kGroup - 1) / kGroup; }

// Encoders multiply by 1 / scale (not divide by scale), on every level alike.
inline float Fp8Scale(float amax) { return amax > 0 ? amax / kE4M3Max : 1.0f; }

// All 256 E4M3 codes as float: the scalar decoder's lookup.
const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = F8E4M3ToF32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// Each level: one FP8 group (≤ 128 channels) at a time, BF16 a whole row. EncodeFp8Group writes
// the group's bytes and returns its scale.

struct Scalar {
  static float EncodeFp8Group(const float* x, int64_t len, uint8_t* q) {
    float amax = 0;
    for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float scale = Fp8Scale(amax), inverse = 1.0f / scale;
    for (int64_t i = 0; i < len; ++i) q[i] = F32ToF8E4M3(x[i] * inverse);
    return scale;
  }

  template <bool kAdd>
  static void DecodeFp8Group(const uint8_t* q, int64_t len, float scale, float* x) {
    const std::array<float, 256>& table = Fp8Table();
    for (int64_t i = 0; i < len; ++i) {
      const float v = table[q[i]] * scale;
      x[i] = kAdd ? x[i] + v : v;
    }
  }

  static void EncodeBf16(const float* x, int64_t n, uint8_t* out) {
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t b = F32ToBf16(x[i]);
      std::memcpy(out + 2 * i, &b, 2);
    }
  }

  template <bool kAdd>
  static void DecodeBf16(const uint8_t* in, int64_t n, float* x) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, in + 2 * i, 2);
      x[i] = kAdd ? x[i] + Bf16ToF32(b) : Bf16ToF32(b);
    }
  }
};

// ---- AVX-512 --------------------------------------------------------------------------------

// F32ToF8E4M3 on 16 lanes, on the integer bits as the scalar code: normals keep 3 mantissa bits
// (ties to even, a carry moves into the exponent, E4M3 code = f32 bits >> 20 less the rebias
// 120 << 3), and the minimum with 0x7e saturates everything from 448 to ∞; below 2^-6 the value
// is a multiple of 2^-9 that the conversion rounds to nearest even; NaN by mask.
EPINFER_TARGET_AVX512 inline __m128i F32ToF8E4M3x16(__m512 y) {
  const __m512i u = _mm512_castps_si512(y);
  const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_and_si512(_mm512_add_epi32(a, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7ffff))),
                       _mm512_set1_epi32(static_cast<int>(0xfff00000u)));
  __m512i code = _mm512_min_epi32(
      _mm512_sub_epi32(_mm512_srli_epi32(rounded, 20), _mm512_set1_epi32(120 << 3)),
      _mm512_set1_epi32(0x7e));
  const __m512i subnormal =
      _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f)));
  code = _mm512_mask_mov_epi32(code, _mm512_cmplt_epi32_mask(a, _mm512_set1_epi32(0x3c800000)),
                               subnormal);
  code = _mm512_mask_mov_epi32(code, _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7f800000)),
                               _mm512_set1_epi32(kFp8NanCode));
  code = _mm512_or_si512(code, _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80)));
  return _mm512_cvtepi32_epi8(code);
}

// F8E4M3ToF32 on 16 lanes: the FP16 reading × 2^8 (exact), NaN codes made the scalar NaN.
EPINFER_TARGET_AVX512 inline __m512 F8E4M3ToF32x16(__m128i bytes) {
  const __m512 v = _mm512_mul_ps(Fp8ToF32Scaled16(bytes), _mm512_set1_ps(kFp8Unscale));
  const __mmask16 nan =
      _mm_cmpeq_epi8_mask(_mm_and_si128(bytes, _mm_set1_epi8(0x7f)), _mm_set1_epi8(kFp8NanCode));
  return _mm512_mask_mov_ps(v, nan, _mm512_set1_ps(NAN));
}

struct Avx512 {
  EPINFER_TARGET_AVX512 static float EncodeFp8Group(const float* x, int64_t len, uint8_t* q) {
    // The group stays in registers between the amax and the conversion.
    __m512 v[kGroup / 16];
    __m512 amax = _mm512_setzero_ps();
    const int64_t vectors = (len + 15) / 16;
    for (int64_t c = 0; c < vectors; ++c) {
      v[c] = _mm512_maskz_loadu_ps(Lanes16(std::min<int64_t>(16, len - 16 * c)), x + 16 * c);
      amax = _mm512_max_ps(_mm512_abs_ps(v[c]), amax);  // a NaN lane keeps amax
    }
    const float scale = Fp8Scale(_mm512_reduce_max_ps(amax));
    const __m512 inverse = _mm512_set1_ps(1.0f / scale);
    for (int64_t c = 0; c < vectors; ++c) {
      _mm_mask_storeu_epi8(q + 16 * c, Lanes16(std::min<int64_t>(16, len - 16 * c)),
                           F32ToF8E4M3x16(_mm512_mul_ps(v[c], inverse)));
    }
    return scale;
  }

  template <bool kAdd>
  EPINFER_TARGET_AVX512 static void DecodeFp8Group(const uint8_t* q, int64_t len, float scale,
                                                   float* x) {
    const __m512 s = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < len; i += 16) {
      const __mmask16 m = Lanes16(std::min<int64_t>(16, len - i));
      __m512 v = _mm512_mul_ps(F8E4M3ToF32x16(_mm_maskz_loadu_epi8(m, q + i)), s);
      if (kAdd) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), v);
      _mm512_mask_storeu_ps(x + i, m, v);
    }
  }

  EPINFER_TARGET_AVX512 static void EncodeBf16(const float* x, int64_t n, uint8_t* out) {
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = Lanes16(std::min<int64_t>(16, n - i));
      const __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, x + i));
      const __m512i high = _mm512_srli_epi32(u, 16);
      // F32ToBf16: round to nearest even on the bits; NaN keeps its high half, made quiet.
      const __m512i odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
      const __m512i rounded = _mm512_srli_epi32(
          _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(
          _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
      const __m512i bits = _mm512_mask_or_epi32(rounded, nan, high, _mm512_set1_epi32(0x40));
      _mm256_mask_storeu_epi16(out + 2 * i, m, _mm512_cvtepi32_epi16(bits));
    }
  }

  template <bool kAdd>
  EPINFER_TARGET_AVX512 static void DecodeBf16(const uint8_t* in, int64_t n, float* x) {
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = Lanes16(std::min<int64_t>(16, n - i));
      __m512 v = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, in + 2 * i)), 16));
      if (kAdd) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), v);
      _mm512_mask_storeu_ps(x + i, m, v);
    }
  }
};

// ---- AVX2: vectors over whole steps, the scalar conversions for a group's or row's tail --------

// As F32ToF8E4M3x16, on 8 lanes; 32-bit codes.
EPINFER_TARGET_AVX2 inline __m256i F32ToF8E4M3x8(__m256 y) {
  const __m256i u = _mm256_castps_si256(y);
  const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_and_si256(_mm256_add_epi32(a, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7ffff))),
                       _mm256_set1_epi32(static_cast<int>(0xfff00000u)));
  __m256i code = _mm256_min_epi32(
      _mm256_sub_epi32(_mm256_srli_epi32(rounded, 20), _mm256_set1_epi32(120 << 3)),
      _mm256_set1_epi32(0x7e));
  const __m256i subnormal =
      _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(512.0f)));
  // Signed compares are right: a ≤ 0x7fffffff.
  code = _mm256_blendv_epi8(code, subnormal, _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3c800000), a));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(kFp8NanCode),
                            _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000)));
  return _mm256_or_si256(code, _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80)));
}

EPINFER_TARGET_AVX2 inline __m256 Abs8(__m256 v) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

struct Avx2 {
  EPINFER_TARGET_AVX2 static float EncodeFp8Group(const float* x, int64_t len, uint8_t* q) {
    const int64_t full = len / 32 * 32;
    __m256 amax8 = _mm256_setzero_ps();
    for (int64_t i = 0; i < full; i += 8) {
      amax8 = _mm256_max_ps(Abs8(_mm256_loadu_ps(x + i)), amax8);  // a NaN lane keeps amax
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    for (int64_t i = full; i < len; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float scale = Fp8Scale(amax), inverse = 1.0f / scale;
    const __m256 inv = _mm256_set1_ps(inverse);
    for (int64_t i = 0; i < full; i += 32) {
      __m256i c[4];
      for (int k = 0; k < 4; ++k) {
        c[k] = F32ToF8E4M3x8(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), inv));
      }
      // The packs interleave the 128-bit lanes; the permute puts the 4-byte runs back in order.
      const __m256i bytes =
          _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]), _mm256_packus_epi32(c[2], c[3]));
      _mm256_storeu_si256(
          reinterpret_cast<__m256i*>(q + i),
          _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    for (int64_t i = full; i < len; ++i) q[i] = F32ToF8E4M3(x[i] * inverse);
    return scale;
  }

  template <bool kAdd>
  EPINFER_TARGET_AVX2 static void DecodeFp8Group(const uint8_t* q, int64_t len, float scale,
                                                 float* x) {
    const __m256 s = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
      __m256 v[2];
      Fp8ToF32Scaled8x2(bytes, &v[0], &v[1]);
      const __m128i nan =
          _mm_cmpeq_epi8(_mm_and_si128(bytes, _mm_set1_epi8(0x7f)), _mm_set1_epi8(kFp8NanCode));
      const __m256i nan_lanes[2] = {_mm256_cvtepi8_epi32(nan),
                                    _mm256_cvtepi8_epi32(_mm_srli_si128(nan, 8))};
      for (int h = 0; h < 2; ++h) {
        const __m256 value =
            _mm256_blendv_ps(_mm256_mul_ps(v[h], _mm256_set1_ps(kFp8Unscale)), _mm256_set1_ps(NAN),
                             _mm256_castsi256_ps(nan_lanes[h]));
        __m256 y = _mm256_mul_ps(value, s);
        if (kAdd) y = _mm256_add_ps(_mm256_loadu_ps(x + i + 8 * h), y);
        _mm256_storeu_ps(x + i + 8 * h, y);
      }
    }
    Scalar::DecodeFp8Group<kAdd>(q + i, len - i, scale, x + i);
  }

  EPINFER_TARGET_AVX2 static void EncodeBf16(const float* x, int64_t n, uint8_t* out) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      __m256i bits[2];
      for (int h = 0; h < 2; ++h) {
        const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(x + i + 8 * h));
        const __m256i high = _mm256_srli_epi32(u, 16);
        const __m256i odd = _mm256_and_si256(high, _mm256_set1_epi32(1));
        const __m256i rounded = _mm256_srli_epi32(
            _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                               _mm256_set1_epi32(0x7f800000));
        bits[h] = _mm256_blendv_epi8(rounded, _mm256_or_si256(high, _mm256_set1_epi32(0x40)), nan);
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * i),
                          _mm256_permute4x64_epi64(_mm256_packus_epi32(bits[0], bits[1]), 0xD8));
    }
    Scalar::EncodeBf16(x + i, n - i, out + 2 * i);
  }

  template <bool kAdd>
  EPINFER_TARGET_AVX2 static void DecodeBf16(const uint8_t* in, int64_t n, float* x) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
      __m256 v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
      if (kAdd) v = _mm256_add_ps(_mm256_loadu_ps(x + i), v);
      _mm256_storeu_ps(x + i, v);
    }
    Scalar::DecodeBf16<kAdd>(in + 2 * i, n - i, x + i);
  }
};

struct Kernels {
  float (*encode_fp8_group)(const float*, int64_t, uint8_t*);
  void (*decode_fp8_group[2])(const uint8_t*, int64_t, float, float*);  // [add]
  void (*encode_bf16)(const float*, int64_t, uint8_t*);
  void (*decode_bf16[2])(const uint8_t*, int64_t, float*);  // [add]
};

template <class L>
constexpr Kernels KernelsOf() {
  return {&L::EncodeFp8Group,
          {&L::template DecodeFp8Group<false>, &L::template DecodeFp8Group<true>},
          &L::EncodeBf16,
          {&L::template DecodeBf16<false>, &L::template DecodeBf16<true>}};
}

// AVX-512 VBMI runs the AVX-512 kernels: the FP16 reading of FP8 needs no byte-permute table.
const Kernels& ActiveKernels() {
  static constexpr Kernels kScalar = KernelsOf<Scalar>(), kAvx2 = KernelsOf<Avx2>(),
                           kAvx512 = KernelsOf<Avx512>();
  switch (ActiveSimd()) {
    case Simd::kAvx512Vbmi:
    case Simd::kAvx512:
      return kAvx512;
    case Simd::kAvx2:
      return kAvx2;
    case Simd::kScalar:
      break;
  }
  return kScalar;
}

template <bool kAdd>
void DecodeFp8(const uint8_t* in, int64_t n, float* x) {
  const auto decode = ActiveKernels().decode_fp8_group[kAdd];
  const uint8_t* q = in + Groups(n) * 4;
  for (int64_t begin = 0; begin < n; begin += kGroup) {
    float scale;
    std::memcpy(&scale, in + begin / kGroup * 4, 4);
    decode(q + begin, std::min(kGroup, n - begin), scale, x + begin);
  }
}

}  // namespace

int64_t Fp8RowBytes(int64_t n) { return Groups(n) * 4 + n; }

void EncodeFp8Row(const float* x, int64_t n, uint8_t* out) {
  const auto encode = ActiveKernels().encode_fp8_group;
  uint8_t* q = out + Groups(n) * 4;
  for (int64_t begin = 0; begin < n; begin += kGroup) {
    const float scale = encode(x + begin, std::min(kGroup, n - begin), q + begin);
    std::memcpy(out + begin / kGroup * 4, &scale, 4);
  }
}

void DecodeFp8Row(const uint8_t* in, int64_t n, float* x) { DecodeFp8<false>(in, n, x); }
void DecodeAddFp8Row(const uint8_t* in, int64_t n, float* x) { DecodeFp8<true>(in, n, x); }

void EncodeBf16Row(const float* x, int64_t n, uint8_t* out) {
  ActiveKernels().encode_bf16(x, n, out);
}
void DecodeBf16Row(const uint8_t* in, int64_t n, float* x) {
  ActiveKernels().decode_bf16[0](in, n, x);
}
void DecodeAddBf16Row(const uint8_t* in, int64_t n, float* x) {
  ActiveKernels().decode_bf16[1](in, n, x);
}

}  // namespace epinfer
