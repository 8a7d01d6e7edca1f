#include "worker/kernels/linear.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace epinfer {
namespace {

enum class Simd { kScalar, kAvx2, kAvx512 };

Simd DetectSimd() {
  __builtin_cpu_init();
  Simd best = Simd::kScalar;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Simd::kAvx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
    best = Simd::kAvx512;
  }
  if (const char* cap = std::getenv("EPINFER_SIMD")) {
    if (std::strcmp(cap, "scalar") == 0) best = Simd::kScalar;
    if (std::strcmp(cap, "avx2") == 0 && best == Simd::kAvx512) best = Simd::kAvx2;
  }
  return best;
}

Simd g_detected = DetectSimd();
Simd g_simd = g_detected;

Simd ActiveSimd() { return g_simd; }

// Up to this many rows of x, MatMul streams W once per group of kGroup tokens (memory-bound
// decode); beyond, it runs sgemm on dequantized panels (compute-bound prefill).
constexpr int64_t kStreamMaxTokens = 16;
constexpr int kGroup = 4;
constexpr int64_t kPanelRows = 128;

// ---- scalar ---------------------------------------------------------------------------------

// Element i of W without the FP8 block scale.
inline float RawWeight(const LinearWeight& w, int64_t i) {
  switch (w.dtype) {
    case DType::kF32:
      return static_cast<const float*>(w.data)[i];
    case DType::kBF16:
      return Bf16ToF32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::kF8E4M3:
      return F8E4M3ToF32(static_cast<const uint8_t*>(w.data)[i]);
    default:
      return 0;
  }
}

void RowsScalar(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
                int64_t r1) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    DequantizeRows(w, r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.cols;
      float acc = 0;
      for (int64_t c = 0; c < w.cols; ++c) acc += row[c] * xt[c];
      y[t * w.rows + r] = acc;
    }
  }
}

// ---- AVX2 -----------------------------------------------------------------------------------

__attribute__((target("avx2,fma"))) inline __m256 Load8(const LinearWeight& w, const void* p) {
  switch (w.dtype) {
    case DType::kBF16: {
      __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case DType::kF8E4M3: {
      __m128i b = _mm_loadl_epi64(static_cast<const __m128i*>(p));
      __m256i v = _mm256_cvtepu8_epi32(b);
      __m256i mag = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x7f)), 20);
      __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x80)), 24);
      __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(mag), _mm256_set1_ps(0x1p120f));
      return _mm256_or_ps(f, _mm256_castsi256_ps(sign));
    }
    default:
      return _mm256_loadu_ps(static_cast<const float*>(p));
  }
}

__attribute__((target("avx2,fma"))) inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One weight row against G token rows. Columns in steps of 8; FP8 applies each 128-column
// block's scale to that block's partial sums.
template <int G>
__attribute__((target("avx2,fma"))) void RowAvx2(const float* x, const LinearWeight& w, int64_t r,
                                                 float* y, int64_t t0) {
  const int es = DTypeSize(w.dtype);
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.cols * es;
  const int64_t block = w.dtype == DType::kF8E4M3 ? kFp8BlockSize : w.cols;
  __m256 total[G];
  for (int g = 0; g < G; ++g) total[g] = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < w.cols; b0 += block) {
    const int64_t b1 = std::min(b0 + block, w.cols);
    __m256 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
    int64_t c = b0;
    for (; c + 8 <= b1; c += 8) {
      __m256 wv = Load8(w, row + c * es);
      for (int g = 0; g < G; ++g) {
        acc[g] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (t0 + g) * w.cols + c), acc[g]);
      }
    }
    float tail[G] = {};
    for (; c < b1; ++c) {
      const float wc = RawWeight(w, r * w.cols + c);
      for (int g = 0; g < G; ++g) tail[g] += wc * x[(t0 + g) * w.cols + c];
    }
    const float scale = w.dtype == DType::kF8E4M3
                            ? w.scale_inv[(r / kFp8BlockSize) * w.scale_cols() + b0 / kFp8BlockSize]
                            : 1.0f;
    for (int g = 0; g < G; ++g) {
      acc[g] = _mm256_add_ps(acc[g], _mm256_setr_ps(tail[g], 0, 0, 0, 0, 0, 0, 0));
      total[g] = _mm256_fmadd_ps(acc[g], _mm256_set1_ps(scale), total[g]);
    }
  }
  for (int g = 0; g < G; ++g) y[(t0 + g) * w.rows + r] = Sum8(total[g]);
}

// ---- AVX-512 --------------------------------------------------------------------------------

__attribute__((target("avx512f,avx512bw"))) inline __m512 Load16(const LinearWeight& w,
                                                                  const void* p) {
  switch (w.dtype) {
    case DType::kBF16: {
      __m256i h = _mm256_loadu_si256(static_cast<const __m256i*>(p));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case DType::kF8E4M3: {
      __m128i b = _mm_loadu_si128(static_cast<const __m128i*>(p));
      __m512i v = _mm512_cvtepu8_epi32(b);
      __m512i mag = _mm512_slli_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x7f)), 20);
      __m512i sign = _mm512_slli_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x80)), 24);
      __m512 f = _mm512_mul_ps(_mm512_castsi512_ps(mag), _mm512_set1_ps(0x1p120f));
      return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(f), sign));
    }
    default:
      return _mm512_loadu_ps(static_cast<const float*>(p));
  }
}

template <int G>
__attribute__((target("avx512f,avx512bw"))) void RowAvx512(const float* x, const LinearWeight& w,
                                                           int64_t r, float* y, int64_t t0) {
  const int es = DTypeSize(w.dtype);
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.cols * es;
  const bool fp8 = w.dtype == DType::kF8E4M3;
  const int64_t block = fp8 ? kFp8BlockSize : w.cols;
  const float* scales = fp8 ? w.scale_inv + (r / kFp8BlockSize) * w.scale_cols() : nullptr;
  __m512 total[G];
  for (int g = 0; g < G; ++g) total[g] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < w.cols; b0 += block) {
    const int64_t b1 = std::min(b0 + block, w.cols);
    __m512 acc[G];
    __m512 acc2[G];
    for (int g = 0; g < G; ++g) acc[g] = acc2[g] = _mm512_setzero_ps();
    int64_t c = b0;
    // Two accumulators per token hide the FMA latency when G is small.
    for (; c + 32 <= b1; c += 32) {
      __m512 w0 = Load16(w, row + c * es);
      __m512 w1 = Load16(w, row + (c + 16) * es);
      for (int g = 0; g < G; ++g) {
        const float* xt = x + (t0 + g) * w.cols + c;
        acc[g] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xt), acc[g]);
        acc2[g] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xt + 16), acc2[g]);
      }
    }
    for (; c + 16 <= b1; c += 16) {
      __m512 w0 = Load16(w, row + c * es);
      for (int g = 0; g < G; ++g) {
        acc[g] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + (t0 + g) * w.cols + c), acc[g]);
      }
    }
    if (c < b1) {
      // Masked tail: load only the remaining columns.
      const __mmask16 mask = static_cast<__mmask16>((1u << (b1 - c)) - 1);
      __m512 w0;
      if (w.dtype == DType::kF32) {
        w0 = _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(row + c * es));
      } else {
        alignas(64) uint8_t buf[64] = {};
        std::memcpy(buf, row + c * es, static_cast<size_t>((b1 - c) * es));
        w0 = Load16(w, buf);
      }
      for (int g = 0; g < G; ++g) {
        acc[g] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(mask, x + (t0 + g) * w.cols + c),
                                 acc[g]);
      }
    }
    const __m512 scale = _mm512_set1_ps(fp8 ? scales[b0 / kFp8BlockSize] : 1.0f);
    for (int g = 0; g < G; ++g) {
      total[g] = _mm512_fmadd_ps(_mm512_add_ps(acc[g], acc2[g]), scale, total[g]);
    }
  }
  for (int g = 0; g < G; ++g) y[(t0 + g) * w.rows + r] = _mm512_reduce_add_ps(total[g]);
}

// ---- drivers --------------------------------------------------------------------------------

template <int G>
void Row(Simd simd, const float* x, const LinearWeight& w, int64_t r, float* y, int64_t t0) {
  if (simd == Simd::kAvx512) {
    RowAvx512<G>(x, w, r, y, t0);
  } else {
    RowAvx2<G>(x, w, r, y, t0);
  }
}

void StreamRows(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
                int64_t r1) {
  const Simd simd = ActiveSimd();
  if (simd == Simd::kScalar || w.dtype == DType::kF16) {
    RowsScalar(x, n, w, y, r0, r1);
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    int64_t t = 0;
    for (; t + kGroup <= n; t += kGroup) Row<kGroup>(simd, x, w, r, y, t);
    for (; t + 2 <= n; t += 2) Row<2>(simd, x, w, r, y, t);
    for (; t < n; ++t) Row<1>(simd, x, w, r, y, t);
  }
}

void PanelGemm(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
               int64_t r1, std::vector<float>& panel) {
  const float* b;
  if (w.dtype == DType::kF32) {
    b = static_cast<const float*>(w.data) + r0 * w.cols;
  } else {
    panel.resize(static_cast<size_t>((r1 - r0) * w.cols));
    DequantizeRows(w, r0, r1, panel.data());
    b = panel.data();
  }
  // y[:, r0:r1] = x · panelᵀ
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
              static_cast<int>(r1 - r0), static_cast<int>(w.cols), 1.0f, x,
              static_cast<int>(w.cols), b, static_cast<int>(w.cols), 0.0f, y + r0,
              static_cast<int>(w.rows));
}

int g_threads = 0;

}  // namespace

int64_t LinearWeight::bytes() const {
  int64_t b = rows * cols * DTypeSize(dtype);
  if (dtype == DType::kF8E4M3) b += ((rows + kFp8BlockSize - 1) / kFp8BlockSize) * scale_cols() * 4;
  return b;
}

const char* SimdLevel() {
  switch (ActiveSimd()) {
    case Simd::kAvx512:
      return "avx512";
    case Simd::kAvx2:
      return "avx2";
    case Simd::kScalar:
      return "scalar";
  }
  return "?";
}

bool SetSimdLevel(const char* level) {
  Simd wanted;
  if (std::strcmp(level, "avx512") == 0) {
    wanted = Simd::kAvx512;
  } else if (std::strcmp(level, "avx2") == 0) {
    wanted = Simd::kAvx2;
  } else if (std::strcmp(level, "scalar") == 0) {
    wanted = Simd::kScalar;
  } else {
    return false;
  }
  if (static_cast<int>(wanted) > static_cast<int>(g_detected)) return false;
  g_simd = wanted;
  return true;
}

void SetKernelThreads(int threads) {
  g_threads = threads > 0 ? threads : omp_get_num_procs();
  omp_set_num_threads(g_threads);
  openblas_set_num_threads(1);
}

int KernelThreads() {
  if (g_threads == 0) SetKernelThreads(0);
  return g_threads;
}

void DequantizeRows(const LinearWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t count = (row_end - row_begin) * w.cols;
  const int64_t base = row_begin * w.cols;
  switch (w.dtype) {
    case DType::kF32:
      std::memcpy(out, static_cast<const float*>(w.data) + base, count * sizeof(float));
      return;
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + base;
      for (int64_t i = 0; i < count; ++i) out[i] = Bf16ToF32(p[i]);
      return;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + base;
      for (int64_t i = 0; i < count; ++i) out[i] = F16ToF32(p[i]);
      return;
    }
    case DType::kF8E4M3: {
      const uint8_t* p = static_cast<const uint8_t*>(w.data);
      for (int64_t r = row_begin; r < row_end; ++r) {
        const float* scales = w.scale_inv + (r / kFp8BlockSize) * w.scale_cols();
        float* o = out + (r - row_begin) * w.cols;
        for (int64_t c = 0; c < w.cols; ++c) {
          o[c] = F8E4M3ToF32(p[r * w.cols + c]) * scales[c / kFp8BlockSize];
        }
      }
      return;
    }
    default:
      std::memset(out, 0, count * sizeof(float));
  }
}

void MatMul(const float* x, int64_t n, const LinearWeight& w, float* y) {
  if (n <= 0 || w.rows <= 0) return;
  const int threads = KernelThreads();
  // Small matrices are not worth waking threads for.
  const bool parallel = threads > 1 && w.rows * w.cols * std::max<int64_t>(n, 1) >= (1 << 15);
  if (n <= kStreamMaxTokens) {
    const int64_t chunk = 16;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t r0 = 0; r0 < w.rows; r0 += chunk) {
      StreamRows(x, n, w, y, r0, std::min(r0 + chunk, w.rows));
    }
    return;
  }
#pragma omp parallel if (parallel)
  {
    std::vector<float> panel;
#pragma omp for schedule(dynamic)
    for (int64_t r0 = 0; r0 < w.rows; r0 += kPanelRows) {
      PanelGemm(x, n, w, y, r0, std::min(r0 + kPanelRows, w.rows), panel);
    }
  }
}

}  // namespace epinfer
