#include "worker/kernels/ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "worker/kernels/simd.h"

namespace epinfer {
namespace {

// ---- exp ------------------------------------------------------------------------------------
// Cephes expf: e^x = 2^n · e^r with n = round(x / ln 2), |r| ≤ ln2 / 2, e^r by a degree-6
// polynomial; within 2 ulp of the correctly rounded value over the clamped range. Inputs below
// -87.3 give ~1e-38 instead of a subnormal or 0, inputs above 88.7 saturate at ~3e38.
constexpr float kExpHi = 88.7228f, kExpLo = -87.3365f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

EPINFER_TARGET_AVX512 inline __m512 Exp16(__m512 x) {
  // Constant first: min/max return the second operand when one is NaN, so NaN propagates.
  x = _mm512_min_ps(_mm512_set1_ps(kExpHi), _mm512_max_ps(_mm512_set1_ps(kExpLo), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP5));
  const __m512 r2 = _mm512_mul_ps(r, r);
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(e, n);
}

EPINFER_TARGET_AVX2 inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(kExpHi), _mm256_max_ps(_mm256_set1_ps(kExpLo), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  // 2^n with n in [-126, 127] after the clamp: the exponent field directly.
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
}

EPINFER_TARGET_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

EPINFER_TARGET_AVX2 inline double SumDouble8(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  double s = 0;
  for (float f : lanes) s += f;
  return s;
}

// Masks of the first k (0..16) lanes.
EPINFER_TARGET_AVX512 inline __mmask16 Lanes(int64_t k) {
  return static_cast<__mmask16>((1u << k) - 1);
}

// ---- AVX-512 ----------------------------------------------------------------------------------

EPINFER_TARGET_AVX512 float DotAvx512(const float* a, const float* b, int64_t count) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < count; i += 16) {
    const __mmask16 m = Lanes(std::min<int64_t>(16, count - i));
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

EPINFER_TARGET_AVX512 void AxpyAvx512(float alpha, const float* x, int64_t count, float* y) {
  const __m512 a = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < count) {
    const __mmask16 m = Lanes(count - i);
    _mm512_mask_storeu_ps(
        y + i, m, _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

EPINFER_TARGET_AVX512 void RmsNormAvx512(const float* x, int64_t n, int64_t dim,
                                         const float* weight, float eps, float* out) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * dim;
    float* ot = out + t * dim;
    // Squares summed in double, as the scalar path, so long rows lose nothing.
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i < dim; i += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(Lanes(std::min<int64_t>(16, dim - i)), xt + i);
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
      const __m512d hi = _mm512_cvtps_pd(
          _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
      s0 = _mm512_fmadd_pd(lo, lo, s0);
      s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    const double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    const __m512 inv = _mm512_set1_ps(
        static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps)));
    for (i = 0; i < dim; i += 16) {
      const __mmask16 m = Lanes(std::min<int64_t>(16, dim - i));
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xt + i), inv);
      _mm512_mask_storeu_ps(ot + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, weight + i)));
    }
  }
}

EPINFER_TARGET_AVX512 void SiluMulAvx512(const float* gate, const float* up, int64_t count,
                                         float* out) {
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = Lanes(std::min<int64_t>(16, count - i));
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

EPINFER_TARGET_AVX512 void SoftmaxAvx512(float* x, int64_t count) {
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = Lanes(std::min<int64_t>(16, count - i));
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = Lanes(std::min<int64_t>(16, count - i));
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), max));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
  }
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / _mm512_reduce_add_ps(sum)));
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = Lanes(std::min<int64_t>(16, count - i));
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

// AttendRows' heads go through in tiles of at most kAttendHeads: two accumulators per head in
// the score kernel (16 of the 32 registers), two output vectors per head in the output kernel.
constexpr int kAttendHeads = 8;

// Lane i of the result: the sum of v[i]'s 16 lanes, for 16 vectors at once (a transposing add
// tree: 45 instructions where 16 separate reductions take ~130).
EPINFER_TARGET_AVX512 inline __m512 Reduce16(const __m512 (&v)[16]) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3]
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: the lane's sums of v[4i .. 4i + 3]
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // Across the four 128-bit lanes: lane i ends up holding b[i]'s totals.
  const __m512 d01 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x44),
                                   _mm512_shuffle_f32x4(b[0], b[1], 0xEE));
  const __m512 d23 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x44),
                                   _mm512_shuffle_f32x4(b[2], b[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d01, d23, 0x88), _mm512_shuffle_f32x4(d01, d23, 0xDD));
}

// Tiles of rows ScoreRowsAvx512 prefetches ahead.
constexpr int64_t kPrefetchTiles = 2;

// scores[h * lds + r] = scale · q[h] · rows[r] for H heads and `count` rows of `dim` values: K
// rows at a time against all H heads, K·H ≤ 16 accumulators (each 16-value chunk of a row and of
// a query loaded once per tile), reduced together by Reduce16; the last count % K rows one by one.
template <int H>
EPINFER_TARGET_AVX512 void ScoreRowsAvx512(const float* q, int64_t dim, const RowRun& run,
                                           const RowRun& next, float scale, float* scores,
                                           int64_t lds) {
  constexpr int K = std::min(8, 16 / H);
  const float* rows = run.rows;
  const int64_t count = run.count;
  // Row j of this run, or of the next one past its end; nullptr past both.
  auto row_at = [&](int64_t j) -> const float* {
    if (j < count) return rows + j * dim;
    return j - count < next.count ? next.rows + (j - count) * dim : nullptr;
  };
  int64_t r = 0;
  for (; r + K <= count; r += K) {
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    // The rows two tiles on, a line of each per chunk: cached rows come from memory (a step
    // streams the weights past them), one block of rows at a time.
    const float* ahead[K];
    for (int k = 0; k < K; ++k) ahead[k] = row_at(r + kPrefetchTiles * K + k);
    for (int64_t c = 0; c < dim; c += 16) {
      for (int k = 0; k < K; ++k) {
        if (ahead[k] != nullptr) {
          _mm_prefetch(reinterpret_cast<const char*>(ahead[k] + c), _MM_HINT_T0);
        }
      }
      const __mmask16 m = Lanes(std::min<int64_t>(16, dim - c));
      __m512 qv[H];
      for (int h = 0; h < H; ++h) qv[h] = _mm512_maskz_loadu_ps(m, q + h * dim + c);
      for (int k = 0; k < K; ++k) {
        const __m512 row = _mm512_maskz_loadu_ps(m, rows + (r + k) * dim + c);
        for (int h = 0; h < H; ++h) acc[k * H + h] = _mm512_fmadd_ps(qv[h], row, acc[k * H + h]);
      }
    }
    alignas(64) float sums[16];
    _mm512_store_ps(sums, _mm512_mul_ps(Reduce16(acc), _mm512_set1_ps(scale)));
    for (int k = 0; k < K; ++k) {
      for (int h = 0; h < H; ++h) scores[h * lds + r + k] = sums[k * H + h];
    }
  }
  for (; r < count; ++r) {
    const float* row = rows + r * dim;
    __m512 acc[H];
    for (int h = 0; h < H; ++h) acc[h] = _mm512_setzero_ps();
    for (int64_t c = 0; c < dim; c += 16) {
      const __mmask16 m = Lanes(std::min<int64_t>(16, dim - c));
      const __m512 k = _mm512_maskz_loadu_ps(m, row + c);
      for (int h = 0; h < H; ++h) {
        acc[h] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + h * dim + c), k, acc[h]);
      }
    }
    for (int h = 0; h < H; ++h) scores[h * lds + r] = scale * _mm512_reduce_add_ps(acc[h]);
  }
}

// out[h * ldo + j] += Σ_r probs[h * ldp + r] · rows[r * dim + j] for H heads, j < out_dim:
// 16 · V columns at a time over all `count` rows (a KV block's rows stay in L1 across the passes),
// V as many as 16 accumulators allow: each row's probabilities, broadcast once per pass, feed
// V FMAs each.
template <int H>
EPINFER_TARGET_AVX512 void WeighRowsAvx512(const float* probs, int64_t ldp, int64_t dim,
                                           const float* rows, int64_t count, int64_t out_dim,
                                           float* out, int64_t ldo) {
  constexpr int V = H <= 2 ? 8 : H <= 4 ? 4 : 2;
  for (int64_t j = 0; j < out_dim; j += 16 * V) {
    __mmask16 m[V];
    for (int v = 0; v < V; ++v) m[v] = Lanes(std::clamp<int64_t>(out_dim - j - 16 * v, 0, 16));
    __m512 a[H][V];
    for (int h = 0; h < H; ++h) {
      for (int v = 0; v < V; ++v) a[h][v] = _mm512_setzero_ps();
    }
    for (int64_t r = 0; r < count; ++r) {
      const float* row = rows + r * dim + j;
      __m512 k[V];
      for (int v = 0; v < V; ++v) k[v] = _mm512_maskz_loadu_ps(m[v], row + 16 * v);
      for (int h = 0; h < H; ++h) {
        const __m512 p = _mm512_set1_ps(probs[h * ldp + r]);
        for (int v = 0; v < V; ++v) a[h][v] = _mm512_fmadd_ps(p, k[v], a[h][v]);
      }
    }
    for (int h = 0; h < H; ++h) {
      for (int v = 0; v < V; ++v) {
        float* o = out + h * ldo + j + 16 * v;
        _mm512_mask_storeu_ps(o, m[v], _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], o), a[h][v]));
      }
    }
  }
}

// f(std::integral_constant<int, h>) for a run-time 1 ≤ h ≤ H.
template <int H, class F>
void WithHeads(int64_t h, const F& f) {
  if constexpr (H > 0) {
    if (h == H) return f(std::integral_constant<int, H>{});
    return WithHeads<H - 1>(h, f);
  }
}

// ---- AVX2 -------------------------------------------------------------------------------------

EPINFER_TARGET_AVX2 float DotAvx2(const float* a, const float* b, int64_t count) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  float sum = Sum8(_mm256_add_ps(s0, s1));
  for (; i < count; ++i) sum += a[i] * b[i];
  return sum;
}

EPINFER_TARGET_AVX2 void AxpyAvx2(float alpha, const float* x, int64_t count, float* y) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < count; ++i) y[i] += alpha * x[i];
}

EPINFER_TARGET_AVX2 void SiluMulAvx2(const float* gate, const float* up, int64_t count,
                                     float* out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < count; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

EPINFER_TARGET_AVX2 void SoftmaxAvx2(float* x, int64_t count) {
  const float max = *std::max_element(x, x + count);
  const __m256 vmax = _mm256_set1_ps(max);
  __m256 vsum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
    _mm256_storeu_ps(x + i, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  double sum = SumDouble8(vsum);
  for (; i < count; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
  for (i = 0; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  }
  for (; i < count; ++i) x[i] *= static_cast<float>(1.0 / sum);
}

// ---- scalar -----------------------------------------------------------------------------------

void RmsNormScalar(const float* x, int64_t n, int64_t dim, const float* weight, float eps,
                   float* out) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * dim;
    float* ot = out + t * dim;
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(xt[i]) * xt[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) ot[i] = xt[i] * inv * weight[i];
  }
}

}  // namespace

void RmsNorm(const float* x, int64_t n, int64_t dim, const float* weight, float eps, float* out) {
  // The AVX2 build of the scalar loop vectorises the second pass; the double sum stays serial.
  if (ActiveSimd() >= Simd::kAvx512) {
    RmsNormAvx512(x, n, dim, weight, eps, out);
  } else {
    RmsNormScalar(x, n, dim, weight, eps, out);
  }
}

void SiluMul(const float* gate, const float* up, int64_t count, float* out) {
  if (ActiveSimd() >= Simd::kAvx512) return SiluMulAvx512(gate, up, count, out);
  if (ActiveSimd() == Simd::kAvx2) return SiluMulAvx2(gate, up, count, out);
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* x, int64_t count) {
  if (count <= 0) return;
  if (ActiveSimd() >= Simd::kAvx512) return SoftmaxAvx512(x, count);
  if (ActiveSimd() == Simd::kAvx2) return SoftmaxAvx2(x, count);
  const float max = *std::max_element(x, x + count);
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < count; ++i) x[i] *= inv;
}

void Axpy(float alpha, const float* x, int64_t count, float* y) {
  if (ActiveSimd() >= Simd::kAvx512) return AxpyAvx512(alpha, x, count, y);
  if (ActiveSimd() == Simd::kAvx2) return AxpyAvx2(alpha, x, count, y);
  for (int64_t i = 0; i < count; ++i) y[i] += alpha * x[i];
}

float Dot(const float* a, const float* b, int64_t count) {
  if (ActiveSimd() >= Simd::kAvx512) return DotAvx512(a, b, count);
  if (ActiveSimd() == Simd::kAvx2) return DotAvx2(a, b, count);
  float sum = 0;
  for (int64_t i = 0; i < count; ++i) sum += a[i] * b[i];
  return sum;
}

void AttendRows(const float* q, int64_t heads, int64_t dim, std::span<const RowRun> runs,
                float scale, int64_t out_dim, float* probs, float* out, int64_t ldo) {
  int64_t total = 0;
  for (const RowRun& run : runs) total += run.count;
  for (int64_t h = 0; h < heads; ++h) std::fill(out + h * ldo, out + h * ldo + out_dim, 0.0f);
  if (heads <= 0 || total == 0) return;
  const bool avx512 = ActiveSimd() >= Simd::kAvx512;
  for (int64_t h0 = 0; h0 < heads; h0 += kAttendHeads) {
    const int64_t tile = std::min<int64_t>(kAttendHeads, heads - h0);
    const float* qt = q + h0 * dim;
    float* pt = probs + h0 * total;
    int64_t r0 = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      const RowRun& run = runs[i];
      if (avx512) {
        const RowRun next = i + 1 < runs.size() ? runs[i + 1] : RowRun{};
        WithHeads<kAttendHeads>(tile, [&](auto h) {
          ScoreRowsAvx512<h()>(qt, dim, run, next, scale, pt + r0, total);
        });
      } else {
        for (int64_t h = 0; h < tile; ++h) {
          for (int64_t r = 0; r < run.count; ++r) {
            pt[h * total + r0 + r] = scale * Dot(qt + h * dim, run.rows + r * dim, dim);
          }
        }
      }
      r0 += run.count;
    }
    for (int64_t h = 0; h < tile; ++h) Softmax(pt + h * total, total);
    float* ot = out + h0 * ldo;
    r0 = 0;
    for (const RowRun& run : runs) {
      if (avx512) {
        WithHeads<kAttendHeads>(tile, [&](auto h) {
          WeighRowsAvx512<h()>(pt + r0, total, dim, run.rows, run.count, out_dim, ot, ldo);
        });
      } else {
        for (int64_t h = 0; h < tile; ++h) {
          for (int64_t r = 0; r < run.count; ++r) {
            Axpy(pt[h * total + r0 + r], run.rows + r * dim, out_dim, ot + h * ldo);
          }
        }
      }
      r0 += run.count;
    }
  }
}

}  // namespace epinfer
