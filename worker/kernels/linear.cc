#include "worker/kernels/linear.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "worker/kernels/simd_fp8.h"
#include "worker/kernels/slice_queue.h"

namespace epinfer {
namespace {

// Up to this many rows of x, MatMul streams W once through the SIMD kernels below (decode
// steps); beyond, it runs OpenBLAS sgemm on dequantized panels (prefill), whose conversion and
// packing pay off only for many rows.
constexpr int64_t kStreamMaxTokens = 64;
constexpr int64_t kMaxPanelRows = 4096;
// Up to this many tokens the streaming kernels take one weight row at a time (for the memory
// bandwidth); beyond, tiles of rows × tokens (for the FMA rate).
constexpr int64_t kRowKernelMaxTokens = 4;
// Rows of W one streaming task covers; a cache line of y per task keeps threads' writes apart.
constexpr int64_t kStreamChunkRows = 16;
// How far ahead of the weight stream to prefetch: a single core keeps too few cache-line misses
// in flight from the hardware prefetcher alone to reach the memory bandwidth.
constexpr int64_t kPrefetchBytes = 4096;
// The distance of products of few tokens that stream several panels at once (PanelGroupKernel with
// S > 1, PanelGroupKernelFp8): 4 KB ahead streamed 5-12% slower there than 1.5-3 KB, while BF16
// blocks of 7+ tokens (S = 1) stay faster at 4 KB (docs/PERFORMANCE.md, "Stop 16").
constexpr int64_t kGroupPrefetchBytes = 2048;
// MatMulBatch hands out its bytes in this many slices per thread (MatMul its panels, where there
// are enough): a thread that runs out of work waits for the others' current slice at most, and
// 32 per thread halved that wait at batch 1 against 8 (17-19 -> 7-10 us per region).
constexpr int64_t kSlicesPerThread = 32;
// Below this many weight elements × tokens, waking threads costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t{1} << 16;


// Element i of W, exactly; FP8 without its block scale.
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

// The FP8 scale row of row r (a pointer to its ceil(cols/128) block scales).
inline const float* ScaleRow(const LinearWeight& w, int64_t r) {
  return w.scale_inv + ((w.first_row + r) / kFp8BlockSize) * w.scale_cols();
}

inline const uint8_t* RowBytes(const LinearWeight& w, int64_t r) {
  return static_cast<const uint8_t*>(w.data) + r * w.cols * DTypeSize(w.dtype);
}

// ---- scalar ---------------------------------------------------------------------------------

void DequantizeRowsScalar(const LinearWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* o = out + (r - row_begin) * w.cols;
    const float* scales = w.dtype == DType::kF8E4M3 ? ScaleRow(w, r) : nullptr;
    for (int64_t c = 0; c < w.cols; ++c) {
      o[c] = RawWeight(w, r * w.cols + c);
      if (scales != nullptr) o[c] *= scales[c / kFp8BlockSize];
    }
  }
}

void StreamRowsScalar(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
                      int64_t r1) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    DequantizeRowsScalar(w, r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.cols;
      float acc = 0;
      for (int64_t c = 0; c < w.cols; ++c) acc += row[c] * xt[c];
      y[t * w.rows + r] = acc;
    }
  }
}

void TransposedScalar(const float* x, int64_t n, const LinearWeight& w, float* y) {
  std::fill(y, y + n * w.cols, 0.0f);
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t k = 0; k < w.rows; ++k) {
    DequantizeRowsScalar(w, k, k + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      const float xk = x[t * w.rows + k];
      for (int64_t c = 0; c < w.cols; ++c) y[t * w.cols + c] += xk * row[c];
    }
  }
}

// ---- AVX-512 --------------------------------------------------------------------------------

// 16-bit lanes holding FP8 bytes sign-extended → FP16 bit patterns of value × 2^-8.
EPINFER_TARGET_AVX512 inline __m512i Fp8ToF16Bits32(__m256i bytes) {
  const __m512i h = _mm512_cvtepi8_epi16(bytes);
  return _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16(static_cast<short>(0xBFFF)));
}

// Weight loaders: kStep elements per iteration into kStep / 16 vectors, and up to 16 elements of
// a row's tail. FP8 values come × 2^-8 (its inputs carry the 2^8 and the block scales, see
// ScaledInput) and fold their bytes, sign cleared, into a running maximum that exposes
// NaN codes.
struct F32x512 {
  static constexpr int kBytes = 4;
  static constexpr int kStep = 32;
  EPINFER_TARGET_AVX512 static void Load(const uint8_t* p, __m512* v, __m512i*) {
    v[0] = _mm512_loadu_ps(p);
    v[1] = _mm512_loadu_ps(p + 64);
  }
  EPINFER_TARGET_AVX512 static __m512 LoadPart(const uint8_t* p, int64_t k, __m512i*) {
    return _mm512_maskz_loadu_ps(Lanes16(k), p);
  }
  EPINFER_TARGET_AVX512 static __m512 Load16(const uint8_t* p, __m512i*) {
    return _mm512_loadu_ps(p);
  }
};

struct Bf16x512 {
  static constexpr int kBytes = 2;
  static constexpr int kStep = 32;
  EPINFER_TARGET_AVX512 static __m512 Widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  EPINFER_TARGET_AVX512 static void Load(const uint8_t* p, __m512* v, __m512i*) {
    v[0] = Widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    v[1] = Widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
  }
  EPINFER_TARGET_AVX512 static __m512 LoadPart(const uint8_t* p, int64_t k, __m512i*) {
    return Widen(_mm256_maskz_loadu_epi16(Lanes16(k), p));
  }
  EPINFER_TARGET_AVX512 static __m512 Load16(const uint8_t* p, __m512i*) {
    return Widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
};

struct Fp8x512 {
  static constexpr int kBytes = 1;
  static constexpr int kStep = 64;
  EPINFER_TARGET_AVX512 static void Load(const uint8_t* p, __m512* v, __m512i* probe) {
    const __m512i raw = _mm512_loadu_si512(p);
    *probe = _mm512_max_epu8(*probe, _mm512_and_si512(raw, _mm512_set1_epi8(0x7f)));
    const __m512i lo = Fp8ToF16Bits32(_mm512_castsi512_si256(raw));
    const __m512i hi = Fp8ToF16Bits32(_mm512_extracti64x4_epi64(raw, 1));
    v[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(lo));
    v[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(lo, 1));
    v[2] = _mm512_cvtph_ps(_mm512_castsi512_si256(hi));
    v[3] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(hi, 1));
  }
  EPINFER_TARGET_AVX512 static __m512 LoadPart(const uint8_t* p, int64_t k, __m512i* probe) {
    const __m128i raw = _mm_maskz_loadu_epi8(Lanes16(k), p);
    *probe = _mm512_max_epu8(*probe,
                             _mm512_zextsi128_si512(_mm_and_si128(raw, _mm_set1_epi8(0x7f))));
    return Fp8ToF32Scaled16(raw);
  }
  EPINFER_TARGET_AVX512 static __m512 Load16(const uint8_t* p, __m512i* probe) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    *probe = _mm512_max_epu8(*probe,
                             _mm512_zextsi128_si512(_mm_and_si128(raw, _mm_set1_epi8(0x7f))));
    return Fp8ToF32Scaled16(raw);
  }
};

EPINFER_TARGET_AVX512 inline bool HasFp8Nan(__m512i probe) {
  return _mm512_cmpeq_epi8_mask(probe, _mm512_set1_epi8(static_cast<char>(kFp8NanCode))) != 0;
}

// One weight row against G token rows: y[g * ldy] = x[g * ldx + :cols] · row.
template <class L, int G>
EPINFER_TARGET_AVX512 void RowAvx512(const float* x, int64_t ldx, int64_t cols,
                                     const uint8_t* row, float* y, int64_t ldy) {
  constexpr int V = L::kStep / 16;
  __m512 acc[G][V];
  for (int g = 0; g < G; ++g) {
    for (int v = 0; v < V; ++v) acc[g][v] = _mm512_setzero_ps();
  }
  __m512i probe = _mm512_setzero_si512();
  int64_t c = 0;
  for (; c + L::kStep <= cols; c += L::kStep) {
    const uint8_t* p = row + c * L::kBytes;
    for (int line = 0; line < L::kStep * L::kBytes; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(p + line + kPrefetchBytes), _MM_HINT_T0);
    }
    __m512 wv[V];
    L::Load(p, wv, &probe);
    for (int g = 0; g < G; ++g) {
      for (int v = 0; v < V; ++v) {
        acc[g][v] = _mm512_fmadd_ps(wv[v], _mm512_loadu_ps(x + g * ldx + c + 16 * v), acc[g][v]);
      }
    }
  }
  for (; c < cols; c += 16) {
    const int64_t k = std::min<int64_t>(16, cols - c);
    const __m512 wv = L::LoadPart(row + c * L::kBytes, k, &probe);
    for (int g = 0; g < G; ++g) {
      acc[g][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(Lanes16(k), x + g * ldx + c),
                                  acc[g][0]);
    }
  }
  const bool nan = L::kBytes == 1 && HasFp8Nan(probe);
  for (int g = 0; g < G; ++g) {
    __m512 sum = acc[g][0];
    for (int v = 1; v < V; ++v) sum = _mm512_add_ps(sum, acc[g][v]);
    y[g * ldy] = nan ? NAN : _mm512_reduce_add_ps(sum);
  }
}

// The sums of 16 vectors' lanes, out[i] = Σ v[i]: a tree of shuffles that folds all 16 at once
// (46 instructions instead of 16 separate reductions, which cost a tile kernel as much as 10-30%
// of its FMAs on 512-1024 columns).
EPINFER_TARGET_AVX512 inline void Sum16(const __m512* v, float* out) {
  __m512 t[8], u[4], w[2];
  // Halves: 256-bit half 0 of t[i] folds v[i], half 1 folds v[i + 8].
  for (int i = 0; i < 8; ++i) {
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44),
                         _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
  }
  // 128-bit lanes of u[i]: v[i], v[i + 8], v[i + 4], v[i + 12].
  for (int i = 0; i < 4; ++i) {
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[i], t[i + 4], 0x88),
                         _mm512_shuffle_f32x4(t[i], t[i + 4], 0xDD));
  }
  // Pairs within each 128-bit lane: lane 0 of w[i] holds v[i] twice, then v[i + 2] twice.
  for (int i = 0; i < 2; ++i) {
    w[i] = _mm512_add_ps(_mm512_shuffle_ps(u[i], u[i + 2], 0x44),
                         _mm512_shuffle_ps(u[i], u[i + 2], 0xEE));
  }
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88),
                                 _mm512_shuffle_ps(w[0], w[1], 0xDD));
  // r's lanes hold v[0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15]; the order is its own
  // inverse.
  const __m512i order = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
  _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, r));
}

// Tile loaders, for batches beyond a few tokens: one chunk of kChunk columns of a weight row as
// kVectors f32 vectors, lane p of vector v holding column Order(16 v + p) of the chunk (the tile
// kernels read x permuted the same way, see StreamInput); columns past the last whole chunk load
// 16 at a time in natural order through Part::LoadPart. kRows × kTokens is the tile: measured,
// conversions that cost a shuffle or two per vector (BF16, F32, FP8 through F16) do best as
// 4 rows × 6 tokens, where each input vector feeds 4 FMAs; the table lookup, which converts 64
// weights at once, as 2 rows × 8 tokens.
template <class P>
struct TileBy16 {
  using Part = P;
  static constexpr int kBytes = P::kBytes, kChunk = 16, kVectors = 1, kRows = 4, kTokens = 6;
  static constexpr int Order(int p) { return p; }
  EPINFER_TARGET_AVX512 void Load(const uint8_t* p, __m512* v, __m512i* probe) const {
    v[0] = P::Load16(p, probe);
  }
};
using TileF32 = TileBy16<F32x512>;
using TileBf16 = TileBy16<Bf16x512>;
using TileFp8 = TileBy16<Fp8x512>;

// FP8 → BF16 by table lookup: the high and low byte of each value's BF16 pattern (exact: E4M3
// has 3 mantissa bits, BF16 7; NaN codes give NaN) from two 128-entry tables indexed by the
// byte's low 7 bits, the sign OR-ed back; then BF16 → F32 by shifts. The unpacks leave the 64
// values of a 64-byte chunk in the order kLutOrder, which the inputs are permuted into.
struct Fp8Tables {
  alignas(64) uint8_t hi[128];
  alignas(64) uint8_t lo[128];
};

const Fp8Tables& Fp8LookupTables() {
  static const Fp8Tables tables = [] {
    Fp8Tables t;
    for (int code = 0; code < 128; ++code) {
      const float f = F8E4M3ToF32(static_cast<uint8_t>(code));
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof bits);
      t.hi[code] = static_cast<uint8_t>(bits >> 24);
      t.lo[code] = static_cast<uint8_t>(bits >> 16);
    }
    return t;
  }();
  return tables;
}

// Position p of a chunk's four output vectors holds element kLutOrder[p] of the chunk:
// unpacklo/hi interleave the low/high 8 bytes of each 128-bit lane, and the shifts split each
// 32-bit lane into its low (even) and high (odd) 16-bit word.
constexpr std::array<uint8_t, 64> kLutOrder = [] {
  std::array<uint8_t, 64> order{};
  for (int v = 0; v < 4; ++v) {
    for (int i = 0; i < 16; ++i) {
      const int word = 2 * i + (v % 2);           // word of the unpacked vector
      const int half = v / 2;                     // 0: unpacklo, 1: unpackhi
      order[16 * v + i] = static_cast<uint8_t>(16 * (word / 8) + 8 * half + word % 8);
    }
  }
  return order;
}();

struct LutRegisters {
  __m512i hi0, hi1, lo0, lo1, sign, high_words;
};

EPINFER_TARGET_AVX512VBMI inline LutRegisters LoadLut(const Fp8Tables& t) {
  return {_mm512_load_si512(t.hi),
          _mm512_load_si512(t.hi + 64),
          _mm512_load_si512(t.lo),
          _mm512_load_si512(t.lo + 64),
          _mm512_set1_epi8(static_cast<char>(0x80)),
          _mm512_set1_epi32(static_cast<int>(0xffff0000u))};
}

// 64 FP8 values at p → four f32 vectors in kLutOrder.
EPINFER_TARGET_AVX512VBMI inline void LutConvert64(const uint8_t* p, const LutRegisters& t,
                                                   __m512* wv) {
  const __m512i b = _mm512_loadu_si512(p);
  // hi | (b & 0x80): ternary-logic truth table A | (B & C).
  const __m512i hi =
      _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(t.hi0, b, t.hi1), b, t.sign, 0xF8);
  const __m512i lo = _mm512_permutex2var_epi8(t.lo0, b, t.lo1);
  const __m512i e0 = _mm512_unpacklo_epi8(lo, hi), e1 = _mm512_unpackhi_epi8(lo, hi);
  wv[0] = _mm512_castsi512_ps(_mm512_slli_epi32(e0, 16));
  wv[1] = _mm512_castsi512_ps(_mm512_and_si512(e0, t.high_words));
  wv[2] = _mm512_castsi512_ps(_mm512_slli_epi32(e1, 16));
  wv[3] = _mm512_castsi512_ps(_mm512_and_si512(e1, t.high_words));
}

// A panel stores each E4M3 byte [s e3 e2 e1 e0 m2 m1 m0] as [s e0 m2 m1 m0 e3 e2 e1], so that the
// byte and its double (a byte add) side by side in a 16-bit word hold, from the top, the sign, four
// bits to mask, e3-e1, then e0 m2 m1 m0: F32's sign, exponent low bits and mantissa top bits.
constexpr uint8_t PanelCode(uint8_t b) {
  return static_cast<uint8_t>((b & 0x80) | ((b & 0x0f) << 3) | ((b >> 4) & 0x07));
}

// 64 panel codes at p → four f32 vectors, each value × 2^-8 for exponent codes 1-15 (the panels'
// fixes, Fp8PanelFix, make up for the others), in Fp8PanelByte's order. Per 128-bit lane the
// unpacks interleave each code (high byte) with its double (low byte); one ternary logic keeps
// sign, exponent and mantissa and sets the exponent's bias bits (0x38000000): F32 exponent 112 + e
// for E4M3's exponent e, so 2^(e-7) becomes 2^(e-15). The even words shift into the high half
// first. No table lookups: 2 permute-port µops per 64 values against LutConvert64's 6.
EPINFER_TARGET_AVX512 inline void PanelConvert64(const uint8_t* p, __m512* wv) {
  const __m512i keep = _mm512_set1_epi32(static_cast<int>(0x87F00000u));
  const __m512i bias = _mm512_set1_epi32(0x38000000);
  const __m512i codes = _mm512_load_si512(p);
  const __m512i doubled = _mm512_add_epi8(codes, codes);
  const __m512i words[2] = {_mm512_unpacklo_epi8(doubled, codes),
                            _mm512_unpackhi_epi8(doubled, codes)};
  for (int h = 0; h < 2; ++h) {
    // (A & B) | C: ternary-logic truth table 0xEA.
    wv[2 * h] = _mm512_castsi512_ps(
        _mm512_ternarylogic_epi32(_mm512_slli_epi32(words[h], 16), keep, bias, 0xEA));
    wv[2 * h + 1] =
        _mm512_castsi512_ps(_mm512_ternarylogic_epi32(words[h], keep, bias, 0xEA));
  }
}

// total[g] += scale × Σ acc[g][·], then acc = 0: one scale block of a row's products.
template <int G>
EPINFER_TARGET_AVX512 inline void FlushBlock(__m512 (&acc)[G][4], __m512* total, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int g = 0; g < G; ++g) {
    const __m512 block =
        _mm512_add_ps(_mm512_add_ps(acc[g][0], acc[g][1]), _mm512_add_ps(acc[g][2], acc[g][3]));
    total[g] = _mm512_fmadd_ps(block, s, total[g]);
    for (int v = 0; v < 4; ++v) acc[g][v] = _mm512_setzero_ps();
  }
}

// One FP8 row against G token rows on the lookup path, x unscaled in kLutOrder: each 128-column
// block's products collect in their own accumulators and join the row's total × the block's
// scale, so x needs no scaled copy per 128-row block (at batch 1 those copies are 1/128 of the
// weight elements over again, written and read: ~7% more memory traffic than the weights).
template <int G>
EPINFER_TARGET_AVX512VBMI void RowLut(const float* x, int64_t ldx, int64_t cols,
                                      const uint8_t* row, const float* scales,
                                      const Fp8Tables& t, float* y, int64_t ldy) {
  const LutRegisters lut = LoadLut(t);
  __m512 acc[G][4], total[G];
  for (int g = 0; g < G; ++g) {
    total[g] = _mm512_setzero_ps();
    for (int v = 0; v < 4; ++v) acc[g][v] = _mm512_setzero_ps();
  }
  __m512i probe = _mm512_setzero_si512();  // the tail's NaN codes (the tables map the rest)
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(row + c + kPrefetchBytes), _MM_HINT_T0);
    __m512 wv[4];
    LutConvert64(row + c, lut, wv);
    for (int g = 0; g < G; ++g) {
      for (int v = 0; v < 4; ++v) {
        acc[g][v] = _mm512_fmadd_ps(wv[v], _mm512_loadu_ps(x + g * ldx + c + 16 * v), acc[g][v]);
      }
    }
    // 64-column chunks start at multiples of 64: two per 128-column block.
    if ((c + 64) % kFp8BlockSize == 0) FlushBlock<G>(acc, total, scales[c / kFp8BlockSize]);
  }
  if (c % kFp8BlockSize != 0) FlushBlock<G>(acc, total, scales[c / kFp8BlockSize]);
  // The last < 64 columns, all in one block, come × 2^-8 from the F16 conversion.
  for (; c < cols; c += 16) {
    const int64_t k = std::min<int64_t>(16, cols - c);
    const __m512 wv = Fp8x512::LoadPart(row + c, k, &probe);
    for (int g = 0; g < G; ++g) {
      acc[g][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(Lanes16(k), x + g * ldx + c),
                                  acc[g][0]);
    }
  }
  if (cols % 64 != 0) FlushBlock<G>(acc, total, scales[(cols - 1) / kFp8BlockSize] * kFp8Unscale);
  const bool nan = HasFp8Nan(probe);
  for (int g = 0; g < G; ++g) y[g * ldy] = nan ? NAN : _mm512_reduce_add_ps(total[g]);
}

// The lookup conversion as a tile loader (VBMI).
struct TileFp8Lut {
  using Part = Fp8x512;
  static constexpr int kBytes = 1, kChunk = 64, kVectors = 4, kRows = 2, kTokens = 8;
  static constexpr int Order(int p) { return kLutOrder[p]; }
  LutRegisters lut;
  EPINFER_TARGET_AVX512VBMI void Load(const uint8_t* p, __m512* v, __m512i*) const {
    LutConvert64(p, lut, v);
  }
};

// The tile kernel, compiled once per target: the lookup loader needs VBMI, the others must run
// on AVX-512 CPUs without it, and GCC inlines intrinsics only into functions of their target.
namespace avx512 {
#define EPINFER_TILE_TARGET EPINFER_TARGET_AVX512
#include "worker/kernels/tile_kernel.inc"
#undef EPINFER_TILE_TARGET
}  // namespace avx512
namespace vbmi {
#define EPINFER_TILE_TARGET EPINFER_TARGET_AVX512VBMI
#include "worker/kernels/tile_kernel.inc"
#undef EPINFER_TILE_TARGET
}  // namespace vbmi

// ---- BF16 panels (PackPanels' layout) -----------------------------------------------------

// Tokens one panel kernel call multiplies: 2 × 12 accumulators + 2 weight vectors of the 32
// registers, each 64-byte weight load feeding 24 FMAs.
constexpr int kPanelTokens = 12;
// Tokens whose x rows stay in L2 while a thread's panels stream past them once.
constexpr int64_t kPanelTokenGroup = 48;

// y[t * ldy + i] = Σ_k x[t * ldx + k] · W[i, k] for the panel's `rows` ≤ 32 rows, t < T, from an
// F32 panel in cache: per column k two lines (rows 0-15, then 16-31), an FP8 panel converted once
// for many tokens (see PanelRowsFp8).
template <int T>
EPINFER_TARGET_AVX512 void PanelKernelF32(const float* panel, const float* x, int64_t ldx,
                                          int64_t cols, float* y, int64_t ldy, int64_t rows) {
  __m512 lo[T], hi[T];
  for (int t = 0; t < T; ++t) lo[t] = hi[t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < cols; ++k) {
    const __m512 rows_lo = _mm512_load_ps(panel + k * 32);
    const __m512 rows_hi = _mm512_load_ps(panel + k * 32 + 16);
    for (int t = 0; t < T; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
      lo[t] = _mm512_fmadd_ps(rows_lo, xb, lo[t]);
      hi[t] = _mm512_fmadd_ps(rows_hi, xb, hi[t]);
    }
  }
  const __mmask16 lo_mask = Lanes16(std::min<int64_t>(rows, 16));
  const __mmask16 hi_mask = Lanes16(std::max<int64_t>(rows - 16, 0));
  for (int t = 0; t < T; ++t) {
    _mm512_mask_storeu_ps(y + t * ldy, lo_mask, lo[t]);
    _mm512_mask_storeu_ps(y + t * ldy + 16, hi_mask, hi[t]);
  }
}

// Where a group kernel of S panels prefetches, relative to panel s, while it reads byte `at` of
// it: kAhead bytes ahead, and past the panel's end, at the same place in panel s of the next
// group (S panels on, where ForEachPanelGroup finds it), whose streams then start warm.
template <int S, int64_t kAhead = kPrefetchBytes>
inline int64_t NextGroupAhead(int64_t at, int64_t panel_bytes) {
  const int64_t ahead = at + kAhead;
  return ahead < panel_bytes ? ahead : ahead + (S - 1) * panel_bytes;
}

// y[t * ldy + i] = Σ_k x[t * ldx + k] · W[i, k] for T tokens and S BF16 panels (per column k,
// the panel's 32 values in one 64-byte line, PackPanels' layout) of rows[s] ≤ 32 rows each, in the
// same order for every S. Several panels at once are several streams per thread, which keep more
// of memory's latency covered than one, so a decode step streams its weights faster (a thread
// reads one stream at ~11 GB/s here, whatever the kernel; docs/PERFORMANCE.md, "Two panels at a
// time" and "Stop 15"). The 2 · T · S accumulators must fit the registers.
template <int T, int S>
EPINFER_TARGET_AVX512 void PanelGroupKernel(const std::array<const uint8_t*, S>& panel,
                                            const float* x, int64_t ldx, int64_t cols,
                                            const std::array<float*, S>& y, int64_t ldy,
                                            const std::array<int64_t, S>& rows) {
  static_assert(2 * T * S <= 24);
  __m512 lo[S][T], hi[S][T];
  for (int s = 0; s < S; ++s) {
    for (int t = 0; t < T; ++t) lo[s][t] = hi[s][t] = _mm512_setzero_ps();
  }
  const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const int64_t panel_bytes = 64 * cols;
  for (int64_t k = 0; k < cols; ++k) {
    constexpr int64_t kAhead = S > 1 ? kGroupPrefetchBytes : kPrefetchBytes;
    const int64_t ahead = NextGroupAhead<S, kAhead>(64 * k, panel_bytes);
    for (int s = 0; s < S; ++s) {
      _mm_prefetch(reinterpret_cast<const char*>(panel[s] + ahead), _MM_HINT_T0);
      const __m512i v = _mm512_load_si512(panel[s] + 64 * k);
      const __m512 rows_lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      const __m512 rows_hi = _mm512_castsi512_ps(_mm512_and_si512(v, high_half));
      for (int t = 0; t < T; ++t) {
        // Broadcast where it is used: with 24 accumulators, 12 tokens' broadcasts held across
        // the loop would not fit the registers.
        const __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
        lo[s][t] = _mm512_fmadd_ps(rows_lo, xb, lo[s][t]);
        hi[s][t] = _mm512_fmadd_ps(rows_hi, xb, hi[s][t]);
      }
    }
  }
  for (int s = 0; s < S; ++s) {
    const __mmask16 lo_mask = Lanes16(std::min<int64_t>(rows[s], 16));
    const __mmask16 hi_mask = Lanes16(std::max<int64_t>(rows[s] - 16, 0));
    for (int t = 0; t < T; ++t) {
      _mm512_mask_storeu_ps(y[s] + t * ldy, lo_mask, lo[s][t]);
      _mm512_mask_storeu_ps(y[s] + t * ldy + 16, hi_mask, hi[s][t]);
    }
  }
}

// FP8 panels: each 64 bytes hold two columns k, k + 1 of the panel's 32 rows as PanelCode bytes,
// placed so that PanelConvert64 yields [k: rows 0-15], [k: rows 16-31], [k+1: rows 0-15],
// [k+1: rows 16-31]: row i of column k + half in 128-bit lane (i % 16) / 4, at byte 8 · half +
// 2 · (i % 4) + i / 16 of it. An odd last column pairs with zeros.
constexpr int kFp8PanelTokens = 8;  // 16 accumulators beside 4 weight vectors and the constants

// The byte of a 64-byte FP8 panel chunk that holds panel row i (< 32) of column k + half.
constexpr int Fp8PanelByte(int i, int half) {
  return 16 * (i % 16 / 4) + 8 * half + 2 * (i % 4) + i / 16;
}

// y[t * ldy + i] for the panel's `rows` ≤ 32 rows and T tokens, more than PanelGroupKernelFp8
// takes: the block scale goes on the four converted weight vectors of each column pair, which then
// serve every token.
template <int T>
EPINFER_TARGET_AVX512 void PanelKernelFp8(const uint8_t* panel, const float* x, int64_t ldx,
                                          int64_t cols, const float* scales, float* y,
                                          int64_t ldy, int64_t rows) {
  __m512 lo[T], hi[T];
  for (int t = 0; t < T; ++t) lo[t] = hi[t] = _mm512_setzero_ps();
  const int64_t pairs = cols / 2;
  constexpr int64_t kBlockPairs = kFp8BlockSize / 2;
  for (int64_t b0 = 0; b0 < pairs; b0 += kBlockPairs) {
    const __m512 scale = _mm512_set1_ps(scales[2 * b0 / kFp8BlockSize] * kFp8Unscale);
    const int64_t b1 = std::min(pairs, b0 + kBlockPairs);
    for (int64_t c = b0; c < b1; ++c) {
      const int64_t k = 2 * c;
      _mm_prefetch(reinterpret_cast<const char*>(panel + 64 * c + kPrefetchBytes), _MM_HINT_T0);
      __m512 wv[4];
      PanelConvert64(panel + 64 * c, wv);
      for (int v = 0; v < 4; ++v) wv[v] = _mm512_mul_ps(wv[v], scale);
      for (int t = 0; t < T; ++t) {
        const __m512 x0 = _mm512_set1_ps(x[t * ldx + k]);
        const __m512 x1 = _mm512_set1_ps(x[t * ldx + k + 1]);
        lo[t] = _mm512_fmadd_ps(wv[2], x1, _mm512_fmadd_ps(wv[0], x0, lo[t]));
        hi[t] = _mm512_fmadd_ps(wv[3], x1, _mm512_fmadd_ps(wv[1], x0, hi[t]));
      }
    }
  }
  if (cols % 2 != 0) {  // the last column, whose pair is padding
    const int64_t k = cols - 1;
    __m512 wv[4];
    PanelConvert64(panel + 64 * pairs, wv);
    const __m512 scale = _mm512_set1_ps(scales[k / kFp8BlockSize] * kFp8Unscale);
    for (int t = 0; t < T; ++t) {
      const __m512 x0 = _mm512_mul_ps(_mm512_set1_ps(x[t * ldx + k]), scale);
      lo[t] = _mm512_fmadd_ps(wv[0], x0, lo[t]);
      hi[t] = _mm512_fmadd_ps(wv[1], x0, hi[t]);
    }
  }
  const __mmask16 lo_mask = Lanes16(std::min<int64_t>(rows, 16));
  const __mmask16 hi_mask = Lanes16(std::max<int64_t>(rows - 16, 0));
  for (int t = 0; t < T; ++t) {
    _mm512_mask_storeu_ps(y + t * ldy, lo_mask, lo[t]);
    _mm512_mask_storeu_ps(y + t * ldy + 16, hi_mask, hi[t]);
  }
}

// T tokens against S FP8 panels at once, for S interleaved streams per thread (see
// PanelGroupKernel). Per panel, token and 128-column block, columns k and k + 1 add into one
// accumulator per half (rows 0-15, 16-31), which joins the total × the block's scale: 4 · T · S
// of them, which T · S ≤ 4 fits beside the constants. Every S sums a panel in the same order, so a
// row's result does not depend on how the rows were grouped.
template <int T, int S>
EPINFER_TARGET_AVX512 void PanelGroupKernelFp8(const std::array<const uint8_t*, S>& panel,
                                               const float* x, int64_t ldx, int64_t cols,
                                               const std::array<const float*, S>& scales,
                                               const std::array<float*, S>& y, int64_t ldy,
                                               const std::array<int64_t, S>& rows) {
  static_assert(T * S <= 4);
  __m512 acc[S][T][2], total[S][T][2];
  for (int s = 0; s < S; ++s) {
    for (int t = 0; t < T; ++t) {
      acc[s][t][0] = acc[s][t][1] = total[s][t][0] = total[s][t][1] = _mm512_setzero_ps();
    }
  }
  const int64_t pairs = cols / 2, panel_bytes = 64 * ((cols + 1) / 2);
  constexpr int64_t kBlockPairs = kFp8BlockSize / 2;
  for (int64_t b0 = 0; b0 < pairs; b0 += kBlockPairs) {
    const int64_t b1 = std::min(pairs, b0 + kBlockPairs);
    for (int64_t c = b0; c < b1; ++c) {
      __m512 x0[T], x1[T];
      for (int t = 0; t < T; ++t) {
        x0[t] = _mm512_set1_ps(x[t * ldx + 2 * c]);
        x1[t] = _mm512_set1_ps(x[t * ldx + 2 * c + 1]);
      }
      const int64_t ahead = NextGroupAhead<S, kGroupPrefetchBytes>(64 * c, panel_bytes);
      for (int s = 0; s < S; ++s) {
        _mm_prefetch(reinterpret_cast<const char*>(panel[s] + ahead), _MM_HINT_T0);
        __m512 wv[4];
        PanelConvert64(panel[s] + 64 * c, wv);
        for (int t = 0; t < T; ++t) {
          acc[s][t][0] =
              _mm512_fmadd_ps(wv[2], x1[t], _mm512_fmadd_ps(wv[0], x0[t], acc[s][t][0]));
          acc[s][t][1] =
              _mm512_fmadd_ps(wv[3], x1[t], _mm512_fmadd_ps(wv[1], x0[t], acc[s][t][1]));
        }
      }
    }
    for (int s = 0; s < S; ++s) {
      const __m512 scale = _mm512_set1_ps(scales[s][2 * b0 / kFp8BlockSize] * kFp8Unscale);
      for (int t = 0; t < T; ++t) {
        for (int h = 0; h < 2; ++h) {
          total[s][t][h] = _mm512_fmadd_ps(acc[s][t][h], scale, total[s][t][h]);
          acc[s][t][h] = _mm512_setzero_ps();
        }
      }
    }
  }
  for (int s = 0; s < S; ++s) {
    if (cols % 2 != 0) {  // the last column, whose pair is padding
      __m512 wv[4];
      PanelConvert64(panel[s] + 64 * pairs, wv);
      const __m512 scale = _mm512_set1_ps(scales[s][(cols - 1) / kFp8BlockSize] * kFp8Unscale);
      for (int t = 0; t < T; ++t) {
        const __m512 x0 = _mm512_mul_ps(_mm512_set1_ps(x[t * ldx + cols - 1]), scale);
        total[s][t][0] = _mm512_fmadd_ps(wv[0], x0, total[s][t][0]);
        total[s][t][1] = _mm512_fmadd_ps(wv[1], x0, total[s][t][1]);
      }
    }
    const __mmask16 lo_mask = Lanes16(std::min<int64_t>(rows[s], 16));
    const __mmask16 hi_mask = Lanes16(std::max<int64_t>(rows[s] - 16, 0));
    for (int t = 0; t < T; ++t) {
      _mm512_mask_storeu_ps(y[s] + t * ldy, lo_mask, total[s][t][0]);
      _mm512_mask_storeu_ps(y[s] + t * ldy + 16, hi_mask, total[s][t][1]);
    }
  }
}

// An FP8 panel's `cols` columns as F32 with their block scales applied, in PanelKernelF32's
// layout (column k: rows 0-15, then 16-31), for a run of many tokens to multiply from cache.
EPINFER_TARGET_AVX512 void ConvertFp8Panel(const uint8_t* panel, int64_t cols,
                                           const float* scales, float* out) {
  for (int64_t c = 0; c < (cols + 1) / 2; ++c) {
    const int64_t k = 2 * c;
    __m512 wv[4];
    PanelConvert64(panel + 64 * c, wv);
    const __m512 scale = _mm512_set1_ps(scales[k / kFp8BlockSize] * kFp8Unscale);
    for (int v = 0; v < 4 && k + v / 2 < cols; ++v) {
      _mm512_store_ps(out + 16 * (2 * k + v), _mm512_mul_ps(wv[v], scale));
    }
  }
}

// Bytes of one panel of w in PackPanels' layout.
int64_t PanelBytes(const LinearWeight& w) {
  return w.dtype == DType::kF8E4M3 ? kPanelRows * (w.cols + w.cols % 2) : kPanelRows * w.cols * 2;
}

// f(std::integral_constant<int, t>) for a run-time 1 ≤ t ≤ T: the panel kernels take their
// token count as a template argument.
template <int T, class F>
void WithTokens(int64_t t, const F& f) {
  if constexpr (T > 0) {
    if (t == T) return f(std::integral_constant<int, T>{});
    return WithTokens<T - 1>(t, f);
  }
}

// The panel blocks of rows [r0, r1) of y[n, w.rows] = x · Wᵀ, r0 on a panel boundary:
// block(panel, t, count, r, rows) multiplies panel rows [r, r + rows) by tokens [t, t + count),
// count ≤ kTokens. Token groups of `group` outermost: each group of x stays in L2 while the
// panels stream past it.
template <int kTokens, class Block>
void ForEachPanelBlock(int64_t n, const LinearWeight& w, int64_t r0, int64_t r1,
                       const Block& block, int64_t group = kPanelTokenGroup) {
  const auto* panels = static_cast<const uint8_t*>(w.panels);
  for (int64_t t0 = 0; t0 < n; t0 += group) {
    const int64_t t1 = std::min(n, t0 + group);
    for (int64_t r = r0; r < r1; r += kPanelRows) {
      const uint8_t* panel = panels + (r / kPanelRows) * PanelBytes(w);
      for (int64_t t = t0; t < t1; t += kTokens) {
        block(panel, t, std::min<int64_t>(kTokens, t1 - t), r, std::min(kPanelRows, r1 - r));
      }
    }
  }
}

// Panels a product of few tokens multiplies at a time, as interleaved streams (PanelGroupKernel,
// PanelGroupKernelFp8): as many as their accumulators leave registers for. BF16: four up to 3
// tokens, two up to kGroupTokensBf16. FP8: four for one token, two for two, one for 3 or 4
// (its conversion, not memory, sets the pace there; the group kernel still saves the scale
// multiplies PanelKernelFp8 spends per chunk beyond 2 tokens).
constexpr int kGroupTokensBf16 = 6, kGroupTokensFp8 = 4;
constexpr int GroupPanelsBf16(int64_t n) { return n <= 3 ? 4 : n <= kGroupTokensBf16 ? 2 : 1; }
constexpr int GroupPanelsFp8(int64_t n) { return n == 1 ? 4 : n == 2 ? 2 : 1; }
int64_t GroupPanels(const LinearWeight& w, int64_t n) {
  return w.dtype == DType::kF8E4M3 ? GroupPanelsFp8(n) : GroupPanelsBf16(n);
}

// Rows per unit of work (a decode chunk, a MatMul task) of a panel product of w at n tokens: the
// panels the kernel multiplies at a time (ForEachPanelGroup).
int64_t PanelUnitRows(const LinearWeight& w, int64_t n) { return GroupPanels(w, n) * kPanelRows; }

// Rows [r0, r1) of y = x · Wᵀ (r0 on a panel boundary), S panels at a time through
// group(std::integral_constant<int, S>, panels, scale rows, outputs, rows) while S fit (the last
// may be partial), the rest in groups of S / 2, S / 4, ... (S a power of two).
template <int S, class Group>
void ForEachPanelGroup(const LinearWeight& w, float* y, int64_t r0, int64_t r1,
                       const Group& group) {
  const auto* panels = static_cast<const uint8_t*>(w.panels);
  const bool fp8 = w.dtype == DType::kF8E4M3;
  int64_t r = r0;
  for (; r + (S - 1) * kPanelRows < r1; r += S * kPanelRows) {
    std::array<const uint8_t*, S> panel;
    std::array<const float*, S> scales;
    std::array<float*, S> out;
    std::array<int64_t, S> rows;
    for (int s = 0; s < S; ++s) {
      const int64_t rs = r + s * kPanelRows;
      panel[s] = panels + (rs / kPanelRows) * PanelBytes(w);
      scales[s] = fp8 ? ScaleRow(w, rs) : nullptr;
      out[s] = y + rs;
      rows[s] = std::min(kPanelRows, r1 - rs);
    }
    group(std::integral_constant<int, S>{}, panel, scales, out, rows);
  }
  if constexpr (S > 1) {
    if (r < r1) ForEachPanelGroup<S / 2>(w, y, r, r1, group);
  }
}

void PanelRowsBf16(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
                   int64_t r1) {
  if (n <= kGroupTokensBf16) {
    return WithTokens<kGroupTokensBf16>(n, [&](auto tokens) {
      ForEachPanelGroup<GroupPanelsBf16(tokens())>(
          w, y, r0, r1,
          [&](auto s, const auto& panel, const auto&, const auto& out, const auto& rows) {
            PanelGroupKernel<tokens(), s()>(panel, x, w.cols, w.cols, out, w.rows, rows);
          });
    });
  }
  ForEachPanelBlock<kPanelTokens>(
      n, w, r0, r1, [&](const uint8_t* panel, int64_t t, int64_t count, int64_t r, int64_t rows) {
        WithTokens<kPanelTokens>(count, [&](auto tokens) {
          PanelGroupKernel<tokens(), 1>({panel}, x + t * w.cols, w.cols, w.cols,
                                        {y + t * w.rows + r}, w.rows, {rows});
        });
      });
}

// From this many tokens an FP8 product converts each panel to F32 (block scales applied) once
// per group of tokens and multiplies it from L2 with the 12-token F32 kernel: converting again
// for every 8 tokens cost more than the FMAs it fed (prefill ran at 55-63% of the GEMM peak).
constexpr int64_t kFp8ConvertTokens = 24;
// x bytes per token group of the converted path: the group stays in L2 beside the converted
// panel, so that each panel is converted once per ~100+ tokens.
constexpr int64_t kConvertGroupBytes = 512 << 10;

// Panel p's fixes (see Fp8PanelFix).
std::span<const Fp8PanelFix> PanelFixes(const LinearWeight& w, int64_t p) {
  if (w.panel_fix_start == nullptr) return {};
  return {w.panel_fixes + w.panel_fix_start[p], w.panel_fixes + w.panel_fix_start[p + 1]};
}

// Adds the fixes of panel rows [r0, r1) (r0 on a panel boundary) to y[n, w.rows] = x · Wᵀ, which
// the panel kernels computed with the converted values. One token apart: this runs after every
// chunk of every FP8 product, and the token loop's vectorisation checks cost more per fix than
// its multiply-add.
void AddPanelFixes(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
                   int64_t r1) {
  for (int64_t p = r0 / kPanelRows; p * kPanelRows < r1; ++p) {
    float* panel_y = y + p * kPanelRows;
    const int64_t rows = std::min(kPanelRows, r1 - p * kPanelRows);
    for (const Fp8PanelFix& fix : PanelFixes(w, p)) {
      if (fix.row >= rows) continue;
      if (n == 1) {
        panel_y[fix.row] += fix.value * x[fix.col];
        continue;
      }
      for (int64_t t = 0; t < n; ++t) {
        panel_y[t * w.rows + fix.row] += fix.value * x[t * w.cols + fix.col];
      }
    }
  }
}

void PanelRowsFp8(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
                  int64_t r1) {
  if (n >= kFp8ConvertTokens) {
    thread_local std::vector<float> converted;
    const size_t size = static_cast<size_t>(kPanelRows * w.cols + 16);
    if (converted.size() < size) converted.resize(size);
    float* panel_f32 = reinterpret_cast<float*>(
        (reinterpret_cast<uintptr_t>(converted.data()) + 63) / 64 * 64);
    const int64_t group = std::max<int64_t>(
        kPanelTokens, kConvertGroupBytes / (w.cols * 4) / kPanelTokens * kPanelTokens);
    const uint8_t* last = nullptr;  // the panel now in panel_f32
    ForEachPanelBlock<kPanelTokens>(
        n, w, r0, r1,
        [&](const uint8_t* panel, int64_t t, int64_t count, int64_t r, int64_t rows) {
          if (panel != last) {
            const float* scales = ScaleRow(w, r);
            ConvertFp8Panel(panel, w.cols, scales, panel_f32);
            for (const Fp8PanelFix& fix : PanelFixes(w, r / kPanelRows)) {
              panel_f32[fix.col * kPanelRows + fix.row] += fix.value;
            }
            last = panel;
          }
          WithTokens<kPanelTokens>(count, [&](auto tokens) {
            PanelKernelF32<tokens()>(panel_f32, x + t * w.cols, w.cols, w.cols,
                                     y + t * w.rows + r, w.rows, rows);
          });
        },
        group);
    return;
  }
  if (n <= kGroupTokensFp8) {
    WithTokens<kGroupTokensFp8>(n, [&](auto tokens) {
      ForEachPanelGroup<GroupPanelsFp8(tokens())>(
          w, y, r0, r1,
          [&](auto s, const auto& panel, const auto& scales, const auto& out, const auto& rows) {
            PanelGroupKernelFp8<tokens(), s()>(panel, x, w.cols, w.cols, scales, out, w.rows,
                                               rows);
          });
    });
    return AddPanelFixes(x, n, w, y, r0, r1);
  }
  ForEachPanelBlock<kFp8PanelTokens>(
      n, w, r0, r1, [&](const uint8_t* panel, int64_t t, int64_t count, int64_t r, int64_t rows) {
        WithTokens<kFp8PanelTokens>(count, [&](auto tokens) {
          if constexpr (tokens() <= kGroupTokensFp8) {  // a last block of few tokens
            PanelGroupKernelFp8<tokens(), 1>({panel}, x + t * w.cols, w.cols, w.cols,
                                             {ScaleRow(w, r)}, {y + t * w.rows + r}, w.rows,
                                             {rows});
          } else {
            PanelKernelFp8<tokens()>(panel, x + t * w.cols, w.cols, w.cols, ScaleRow(w, r),
                                     y + t * w.rows + r, w.rows, rows);
          }
        });
      });
  AddPanelFixes(x, n, w, y, r0, r1);
}

// Whether the panel kernels can run w on this CPU now.
bool UsePanels(const LinearWeight& w) {
  return w.panels != nullptr && ActiveSimd() >= Simd::kAvx512;
}

void PanelRows(const float* x, int64_t n, const LinearWeight& w, float* y, int64_t r0,
               int64_t r1) {
  if (w.dtype == DType::kF8E4M3) return PanelRowsFp8(x, n, w, y, r0, r1);
  return PanelRowsBf16(x, n, w, y, r0, r1);
}

// Rows [r0, r1) of y[n, w.rows] = x · Wᵀ through a tile kernel, token blocks outermost so each
// block of x stays in L1 while the chunk's rows (in L2 after the first block) stream past it.
// Tiles stop where rows leave r0's FP8 scale block (x is scaled for that block); returns the
// first row not done, for the row kernels.
template <auto kTile, class TL>
inline int64_t TileRows(const TL& loader, const float* x, int64_t n, const LinearWeight& w,
                        float* y, int64_t r0, int64_t r1) {
  const int64_t block = (w.first_row + r0) / kFp8BlockSize;
  int64_t end = r0;
  while (end + TL::kRows <= r1 && (w.dtype != DType::kF8E4M3 ||
                                    (w.first_row + end + TL::kRows - 1) / kFp8BlockSize == block)) {
    end += TL::kRows;
  }
  for (int64_t r = r0; r < end; r += TL::kRows) {
    for (int64_t t = 0; t < n; t += TL::kTokens) {
      kTile(loader, x + t * w.cols, w.cols, w.cols, RowBytes(w, r), y + t * w.rows + r, w.rows,
            std::min<int64_t>(TL::kTokens, n - t));
    }
  }
  return end;
}

// Cache-line aligned storage for the copies of x the kernels make: a 64-byte load that straddles
// two lines costs two, and the tile kernels load x twice per FMA pair.
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const CacheAligned&) const { return true; }
};
using AlignedFloats = std::vector<float, CacheAligned<float>>;

// What the AVX-512 streaming kernels multiply rows by: x itself, or for FP8 a copy of x per
// 128-row scale block with each column × its block scale (× 2^8 where the weights come × 2^-8),
// so rows need no per-block sums; in kLutOrder within each full 64-column chunk on the
// table-lookup path. Each thread scales the blocks its rows need, when it first needs them.
struct StreamInput {
  const float* x = nullptr;  // [n, cols]
  int64_t n = 0;
  const LinearWeight* w = nullptr;
  uint64_t id = 0;  // this product, unique: names the thread-local scaled copies
  // FP8 on the lookup path: x in kLutOrder, once per product.
  AlignedFloats ordered;
};

// x [n, cols] with each whole chunk of a tile loader's columns in the loader's order.
template <class TL>
void OrderInput(const float* x, int64_t n, int64_t cols, AlignedFloats* out) {
  const int64_t full = cols / TL::kChunk * TL::kChunk;
  out->resize(static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    float* ot = out->data() + t * cols;
    for (int64_t c0 = 0; c0 < full; c0 += TL::kChunk) {
      for (int p = 0; p < TL::kChunk; ++p) ot[c0 + p] = xt[c0 + TL::Order(p)];
    }
    std::copy(xt + full, xt + cols, ot + full);
  }
}

std::atomic<uint64_t> g_stream_inputs{0};

StreamInput MakeStreamInput(const float* x, int64_t n, const LinearWeight& w) {
  StreamInput in{x, n, &w, g_stream_inputs.fetch_add(1, std::memory_order_relaxed) + 1, {}};
  if (w.dtype == DType::kF8E4M3 && ActiveSimd() >= Simd::kAvx512Vbmi) {
    OrderInput<TileFp8Lut>(x, n, w.cols, &in.ordered);
  }
  return in;
}

// x scaled for the FP8 scale row `block`: [n, cols], valid until the thread asks for another.
const float* ScaledInput(const StreamInput& in, int64_t block) {
  struct Scaled {
    uint64_t id = 0;
    int64_t block = -1;
    AlignedFloats x;
  };
  thread_local Scaled cache;
  if (cache.id == in.id && cache.block == block) return cache.x.data();
  const LinearWeight& w = *in.w;
  const int64_t cols = w.cols;
  const int64_t full = ActiveSimd() >= Simd::kAvx512Vbmi ? cols / 64 * 64 : 0;
  const float* scales = w.scale_inv + block * w.scale_cols();
  const float* x = in.ordered.empty() ? in.x : in.ordered.data();
  cache.x.resize(static_cast<size_t>(in.n * cols));
  for (int64_t t = 0; t < in.n; ++t) {
    const float* xt = x + t * cols;
    float* out = cache.x.data() + t * cols;
    for (int64_t c0 = 0; c0 < cols; c0 += kFp8BlockSize) {
      // Lookup chunks hold exact BF16 values, unscaled; FP16-converted columns come × 2^-8.
      const float scale = scales[c0 / kFp8BlockSize];
      const int64_t c1 = std::min(c0 + kFp8BlockSize, cols), split = std::clamp(full, c0, c1);
      for (int64_t c = c0; c < split; ++c) out[c] = xt[c] * scale;
      for (int64_t c = split; c < c1; ++c) out[c] = xt[c] * (scale * kFp8Unscale);
    }
  }
  cache.id = in.id;
  cache.block = block;
  return cache.x.data();
}

template <class L, class TL>
EPINFER_TARGET_AVX512 void StreamRowsAvx512(const StreamInput& in, int64_t n,
                                            const LinearWeight& w, float* y, int64_t r0,
                                            int64_t r1) {
  const int64_t ld = w.cols;
  auto input = [&](int64_t r) {
    return L::kBytes == 1 ? ScaledInput(in, (w.first_row + r) / kFp8BlockSize) : in.x;
  };
  if (n > kRowKernelMaxTokens) {
    const float* x = L::kBytes == 1 ? input(r0) : in.x;
    r0 = TileRows<avx512::TileTokens<TL, TL::kTokens>>(TL{}, x, n, w, y, r0, r1);
  }
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.cols * L::kBytes;
    const float* x = input(r);
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
      RowAvx512<L, 4>(x + t * ld, ld, w.cols, row, y + t * w.rows + r, w.rows);
    }
    float* yt = y + t * w.rows + r;
    switch (n - t) {
      case 3:
        RowAvx512<L, 3>(x + t * ld, ld, w.cols, row, yt, w.rows);
        break;
      case 2:
        RowAvx512<L, 2>(x + t * ld, ld, w.cols, row, yt, w.rows);
        break;
      case 1:
        RowAvx512<L, 1>(x + t * ld, ld, w.cols, row, yt, w.rows);
        break;
      default:
        break;
    }
  }
}

EPINFER_TARGET_AVX512VBMI void StreamRowsLut(const StreamInput& in, int64_t n,
                                             const LinearWeight& w, float* y, int64_t r0,
                                             int64_t r1) {
  const Fp8Tables& tables = Fp8LookupTables();
  const int64_t ld = w.cols;
  if (n > kRowKernelMaxTokens) {
    r0 = TileRows<vbmi::TileTokens<TileFp8Lut, TileFp8Lut::kTokens>>(
        TileFp8Lut{LoadLut(tables)}, ScaledInput(in, (w.first_row + r0) / kFp8BlockSize), n, w,
        y, r0, r1);
  }
  const float* x = in.ordered.data();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.cols;
    const float* scales = ScaleRow(w, r);
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
      RowLut<4>(x + t * ld, ld, w.cols, row, scales, tables, y + t * w.rows + r, w.rows);
    }
    float* yt = y + t * w.rows + r;
    switch (n - t) {
      case 3:
        RowLut<3>(x + t * ld, ld, w.cols, row, scales, tables, yt, w.rows);
        break;
      case 2:
        RowLut<2>(x + t * ld, ld, w.cols, row, scales, tables, yt, w.rows);
        break;
      case 1:
        RowLut<1>(x + t * ld, ld, w.cols, row, scales, tables, yt, w.rows);
        break;
      default:
        break;
    }
  }
}

// y[G, cols] += x[G, rows] · W for 64 columns [c0, c0 + 64) (fewer at the end), W in L's dtype.
template <class L, int G>
EPINFER_TARGET_AVX512 void TransposedColumnsAvx512(const float* x, const LinearWeight& w,
                                                   int64_t c0, float* y) {
  const int64_t width = std::min<int64_t>(64, w.cols - c0);
  const int vectors = static_cast<int>((width + 15) / 16);
  __m512 acc[G][4];
  for (int g = 0; g < G; ++g) {
    for (int v = 0; v < 4; ++v) acc[g][v] = _mm512_setzero_ps();
  }
  __m512i probe = _mm512_setzero_si512();
  for (int64_t k = 0; k < w.rows; ++k) {
    const uint8_t* p = static_cast<const uint8_t*>(w.data) + (k * w.cols + c0) * L::kBytes;
    // A 64-column chunk starting at a multiple of 64 lies inside one 128-column scale block.
    const float scale = L::kBytes == 1 ? ScaleRow(w, k)[c0 / kFp8BlockSize] * kFp8Unscale : 1.0f;
    __m512 wv[4];
    for (int v = 0; v < vectors; ++v) {
      wv[v] = L::LoadPart(p + 16 * v * L::kBytes, std::min<int64_t>(16, width - 16 * v), &probe);
    }
    for (int g = 0; g < G; ++g) {
      const __m512 coef = _mm512_set1_ps(x[g * w.rows + k] * scale);
      for (int v = 0; v < vectors; ++v) acc[g][v] = _mm512_fmadd_ps(coef, wv[v], acc[g][v]);
    }
  }
  for (int g = 0; g < G; ++g) {
    for (int v = 0; v < vectors; ++v) {
      _mm512_mask_storeu_ps(y + g * w.cols + c0 + 16 * v,
                            Lanes16(std::min<int64_t>(16, width - 16 * v)), acc[g][v]);
    }
  }
  if (L::kBytes == 1 && HasFp8Nan(probe)) {
    // A NaN weight poisons its column; rare enough to redo the chunk exactly.
    for (int64_t col = c0; col < c0 + width; ++col) {
      for (int64_t k = 0; k < w.rows; ++k) {
        const float raw = RawWeight(w, k * w.cols + col);
        if (std::isnan(raw)) {
          for (int g = 0; g < G; ++g) y[g * w.cols + col] = NAN;
        }
      }
    }
  }
}

template <class L>
EPINFER_TARGET_AVX512 void TransposedAvx512(const float* x, int64_t n, const LinearWeight& w,
                                            float* y) {
  for (int64_t c0 = 0; c0 < w.cols; c0 += 64) {
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
      TransposedColumnsAvx512<L, 4>(x + t * w.rows, w, c0, y + t * w.cols);
    }
    for (; t < n; ++t) TransposedColumnsAvx512<L, 1>(x + t * w.rows, w, c0, y + t * w.cols);
  }
}

EPINFER_TARGET_AVX512 void DequantizeRowsAvx512(const LinearWeight& w, int64_t row_begin,
                                                int64_t row_end, float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = RowBytes(w, r);
    float* o = out + (r - row_begin) * w.cols;
    const float* scales = w.dtype == DType::kF8E4M3 ? ScaleRow(w, r) : nullptr;
    for (int64_t c = 0; c < w.cols; c += 16) {
      const int64_t k = std::min<int64_t>(16, w.cols - c);
      const __mmask16 m = Lanes16(k);
      __m512 v;
      if (w.dtype == DType::kBF16) {
        v = Bf16x512::LoadPart(row + 2 * c, k, nullptr);
      } else {
        const __m128i raw = _mm_maskz_loadu_epi8(m, row + c);
        v = _mm512_mul_ps(Fp8ToF32Scaled16(raw),
                          _mm512_set1_ps(scales[c / kFp8BlockSize] * kFp8Unscale));
        const __mmask16 nan =
            _mm_cmpeq_epi8_mask(_mm_and_si128(raw, _mm_set1_epi8(0x7f)), _mm_set1_epi8(kFp8NanCode));
        v = _mm512_mask_mov_ps(v, nan, _mm512_set1_ps(NAN));
      }
      _mm512_mask_storeu_ps(o + c, m, v);
    }
  }
}

// ---- AVX2 -----------------------------------------------------------------------------------

EPINFER_TARGET_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 elements per step into two vectors; FP8 as in the AVX-512 loaders.
struct F32x256 {
  static constexpr int kBytes = 4;
  static constexpr bool kBlocked = false;
  EPINFER_TARGET_AVX2 static void Load(const uint8_t* p, __m256* v, __m128i*) {
    v[0] = _mm256_loadu_ps(reinterpret_cast<const float*>(p));
    v[1] = _mm256_loadu_ps(reinterpret_cast<const float*>(p + 32));
  }
};

struct Bf16x256 {
  static constexpr int kBytes = 2;
  static constexpr bool kBlocked = false;
  EPINFER_TARGET_AVX2 static void Load(const uint8_t* p, __m256* v, __m128i*) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
    v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(a), 16));
    v[1] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
};

struct Fp8x256 {
  static constexpr int kBytes = 1;
  static constexpr bool kBlocked = true;
  EPINFER_TARGET_AVX2 static void Load(const uint8_t* p, __m256* v, __m128i* probe) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    *probe = _mm_max_epu8(*probe, _mm_and_si128(raw, _mm_set1_epi8(0x7f)));
    Fp8ToF32Scaled8x2(raw, &v[0], &v[1]);
  }
};

EPINFER_TARGET_AVX2 inline bool HasFp8Nan(__m128i probe) {
  return _mm_movemask_epi8(_mm_cmpeq_epi8(probe, _mm_set1_epi8(kFp8NanCode))) != 0;
}

template <class L, int G>
EPINFER_TARGET_AVX2 void RowAvx2(const float* x, int64_t cols, const LinearWeight& w, int64_t r,
                                 float* y, int64_t ldy) {
  const uint8_t* row = RowBytes(w, r);
  const float* scales = L::kBlocked ? ScaleRow(w, r) : nullptr;
  const int64_t block = L::kBlocked ? kFp8BlockSize : cols;
  __m256 total[G];
  for (int g = 0; g < G; ++g) total[g] = _mm256_setzero_ps();
  __m128i probe = _mm_setzero_si128();
  float tail_total[G] = {};
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t b1 = std::min(b0 + block, cols);
    __m256 acc[G][2];
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = _mm256_setzero_ps();
    int64_t c = b0;
    for (; c + 16 <= b1; c += 16) {
      const uint8_t* p = row + c * L::kBytes;
      for (int line = 0; line < 16 * L::kBytes; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p + line + kPrefetchBytes), _MM_HINT_T0);
      }
      __m256 wv[2];
      L::Load(p, wv, &probe);
      for (int g = 0; g < G; ++g) {
        acc[g][0] = _mm256_fmadd_ps(wv[0], _mm256_loadu_ps(x + g * cols + c), acc[g][0]);
        acc[g][1] = _mm256_fmadd_ps(wv[1], _mm256_loadu_ps(x + g * cols + c + 8), acc[g][1]);
      }
    }
    // The block's last < 16 columns exactly, in the weight's own scale.
    float tail[G] = {};
    for (; c < b1; ++c) {
      const float wc = RawWeight(w, r * cols + c);
      for (int g = 0; g < G; ++g) tail[g] += wc * x[g * cols + c];
    }
    const float scale = L::kBlocked ? scales[b0 / kFp8BlockSize] : 1.0f;
    for (int g = 0; g < G; ++g) {
      const __m256 sum = _mm256_add_ps(acc[g][0], acc[g][1]);
      total[g] = _mm256_fmadd_ps(sum, _mm256_set1_ps(L::kBlocked ? scale * kFp8Unscale : 1.0f),
                                 total[g]);
      tail_total[g] += tail[g] * scale;
    }
  }
  const bool nan = L::kBlocked && HasFp8Nan(probe);
  for (int g = 0; g < G; ++g) y[g * ldy] = nan ? NAN : Sum8(total[g]) + tail_total[g];
}

template <class L>
EPINFER_TARGET_AVX2 void StreamRowsAvx2(const float* x, int64_t n, const LinearWeight& w,
                                        float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) RowAvx2<L, 4>(x + t * w.cols, w.cols, w, r, y + t * w.rows + r, w.rows);
    for (; t + 2 <= n; t += 2) RowAvx2<L, 2>(x + t * w.cols, w.cols, w, r, y + t * w.rows + r, w.rows);
    for (; t < n; ++t) RowAvx2<L, 1>(x + t * w.cols, w.cols, w, r, y + t * w.rows + r, w.rows);
  }
}

EPINFER_TARGET_AVX2 void DequantizeRowsAvx2(const LinearWeight& w, int64_t row_begin,
                                            int64_t row_end, float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = RowBytes(w, r);
    float* o = out + (r - row_begin) * w.cols;
    int64_t c = 0;
    if (w.dtype == DType::kBF16) {
      for (; c + 16 <= w.cols; c += 16) {
        __m256 v[2];
        Bf16x256::Load(row + 2 * c, v, nullptr);
        _mm256_storeu_ps(o + c, v[0]);
        _mm256_storeu_ps(o + c + 8, v[1]);
      }
    } else {
      const float* scales = ScaleRow(w, r);
      // 16 columns starting at a multiple of 16 lie inside one 128-column block.
      for (; c + 16 <= w.cols; c += 16) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c));
        __m256 v[2];
        Fp8ToF32Scaled8x2(raw, &v[0], &v[1]);
        const __m256 scale = _mm256_set1_ps(scales[c / kFp8BlockSize] * kFp8Unscale);
        _mm256_storeu_ps(o + c, _mm256_mul_ps(v[0], scale));
        _mm256_storeu_ps(o + c + 8, _mm256_mul_ps(v[1], scale));
        if (HasFp8Nan(_mm_and_si128(raw, _mm_set1_epi8(0x7f)))) {
          for (int i = 0; i < 16; ++i) {
            if ((row[c + i] & 0x7f) == kFp8NanCode) o[c + i] = NAN;
          }
        }
      }
    }
    for (; c < w.cols; ++c) {
      o[c] = RawWeight(w, r * w.cols + c);
      if (w.dtype == DType::kF8E4M3) o[c] *= ScaleRow(w, r)[c / kFp8BlockSize];
    }
  }
}

// ---- drivers --------------------------------------------------------------------------------

void StreamRows(const StreamInput& in, int64_t n, const LinearWeight& w, float* y, int64_t r0,
                int64_t r1) {
  const Simd simd = ActiveSimd();
  if (UsePanels(w)) return PanelRows(in.x, n, w, y, r0, r1);
  if (simd >= Simd::kAvx512) {
    switch (w.dtype) {
      case DType::kF32:
        return StreamRowsAvx512<F32x512, TileF32>(in, n, w, y, r0, r1);
      case DType::kBF16:
        return StreamRowsAvx512<Bf16x512, TileBf16>(in, n, w, y, r0, r1);
      case DType::kF8E4M3:
        if (simd >= Simd::kAvx512Vbmi) return StreamRowsLut(in, n, w, y, r0, r1);
        return StreamRowsAvx512<Fp8x512, TileFp8>(in, n, w, y, r0, r1);
      default:
        break;
    }
  } else if (simd == Simd::kAvx2) {
    switch (w.dtype) {
      case DType::kF32:
        return StreamRowsAvx2<F32x256>(in.x, n, w, y, r0, r1);
      case DType::kBF16:
        return StreamRowsAvx2<Bf16x256>(in.x, n, w, y, r0, r1);
      case DType::kF8E4M3:
        return StreamRowsAvx2<Fp8x256>(in.x, n, w, y, r0, r1);
      default:
        break;
    }
  }
  StreamRowsScalar(in.x, n, w, y, r0, r1);
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
  if (dtype == DType::kF8E4M3 && rows > 0) {
    const int64_t scale_rows =
        (first_row + rows - 1) / kFp8BlockSize - first_row / kFp8BlockSize + 1;
    b += scale_rows * scale_cols() * static_cast<int64_t>(sizeof(float));
  }
  return b;
}

LinearWeight LinearWeight::Rows(int64_t begin, int64_t end) const {
  LinearWeight view = *this;
  view.rows = end - begin;
  view.data = static_cast<const uint8_t*>(data) + begin * cols * DTypeSize(dtype);
  view.first_row = first_row + begin;
  view.panels = panels != nullptr && begin % kPanelRows == 0
                    ? static_cast<const uint8_t*>(panels) + begin / kPanelRows * PanelBytes(*this)
                    : nullptr;
  view.panel_fix_start = view.panels != nullptr && panel_fix_start != nullptr
                             ? panel_fix_start + begin / kPanelRows
                             : nullptr;
  return view;
}

namespace {

// Whether PackPanels packs w on this CPU.
bool Packable(const LinearWeight& w) {
  // FP8 panels start where the weight's scale blocks put them: a panel never straddles two.
  const bool dtype = w.dtype == DType::kBF16 ||
                     (w.dtype == DType::kF8E4M3 && w.first_row % kPanelRows == 0);
  return dtype && ActiveSimd() >= Simd::kAvx512 && w.rows > 0 && w.cols > 0;
}

int64_t PackedBytes(const LinearWeight& w) {
  return (w.rows + kPanelRows - 1) / kPanelRows * PanelBytes(w);
}

// Whether PanelConvert64 gives E4M3 code `code` exactly: all but exponent code 0 (zero and the
// subnormals) and the NaN codes.
constexpr bool PanelConvertsExactly(uint8_t code) {
  return (code & 0x78) != 0 && (code & 0x7f) != kFp8NanCode;
}

// What PanelConvert64 gives for `code`, in E4M3 units: 2^(e-7) · (1 + m/8) for every exponent
// code e, 0 and the NaN codes included.
float PanelConverted(uint8_t code) {
  const float v = std::ldexp(1.0f + static_cast<float>(code & 7) / 8.0f, ((code >> 3) & 15) - 7);
  return (code & 0x80) != 0 ? -v : v;
}

// Where each row's fixes start among an FP8 weight's fixes (rows + 1 entries, the last the
// count): one pass over the codes, which the compiler vectorises.
std::vector<int64_t> RowFixStarts(const LinearWeight& w) {
  std::vector<int64_t> start(static_cast<size_t>(w.rows + 1), 0);
#pragma omp parallel for schedule(static) if (ParallelWorthwhile(w.rows * w.cols))
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* row = RowBytes(w, r);
    int64_t count = 0;
    for (int64_t k = 0; k < w.cols; ++k) count += PanelConvertsExactly(row[k]) ? 0 : 1;
    start[r + 1] = count;
  }
  for (int64_t r = 0; r < w.rows; ++r) start[r + 1] += start[r];
  return start;
}

// A weight's fixes beyond this share of its values (weights mostly zero) stay on the row-major
// kernels, which convert every code exactly: their fixes would cost more than the conversion saves.
constexpr int64_t kMaxFixShare = 16;

// Writes w's panels at `out` (64-byte aligned, PackedBytes(w) zeroed bytes) and points w at them;
// an FP8 weight's fixes go to `fixes`, row r's from row_start[r] on (RowFixStarts), and its
// panels' fix ranges to `fix_start`.
void PackInto(LinearWeight* w, uint8_t* out, const int64_t* row_start, int64_t* fix_start,
              Fp8PanelFix* fixes) {
  const bool bf16 = w->dtype == DType::kBF16;
  const int64_t panel_bytes = PanelBytes(*w);
#pragma omp parallel for schedule(static) if (ParallelWorthwhile(w->rows * w->cols))
  for (int64_t r = 0; r < w->rows; ++r) {
    const int64_t i = r % kPanelRows;
    uint8_t* panel = out + (r / kPanelRows) * panel_bytes;
    if (bf16) {
      // Row i of its panel: 32-bit lane i % 16, low half for i < 16, high half after.
      auto* dst = reinterpret_cast<uint16_t*>(panel) + 2 * (i % 16) + i / 16;
      const auto* src = static_cast<const uint16_t*>(w->data) + r * w->cols;
      for (int64_t k = 0; k < w->cols; ++k) dst[k * kPanelRows] = src[k];
    } else {
      const auto* src = static_cast<const uint8_t*>(w->data) + r * w->cols;
      const int row = static_cast<int>(i);
      const int at[2] = {Fp8PanelByte(row, 0), Fp8PanelByte(row, 1)};
      const float* scales = ScaleRow(*w, r);
      Fp8PanelFix* fix = fixes + row_start[r];
      for (int64_t k = 0; k < w->cols; ++k) {
        const uint8_t code = src[k];
        panel[64 * (k / 2) + at[k % 2]] = PanelCode(code);
        if (!PanelConvertsExactly(code)) {
          const float delta = F8E4M3ToF32(code) - PanelConverted(code);
          *fix++ = {static_cast<int32_t>(k), row, delta * scales[k / kFp8BlockSize]};
        }
      }
    }
  }
  w->panels = out;
  if (bf16) return;
  const int64_t panels = (w->rows + kPanelRows - 1) / kPanelRows;
  for (int64_t p = 0; p <= panels; ++p) {
    fix_start[p] = row_start[std::min(p * kPanelRows, w->rows)];
  }
  w->panel_fixes = fixes;
  w->panel_fix_start = fix_start;
}

// Bytes rounded up to whole 64-byte lines, so that what follows in the arena stays aligned.
int64_t Lines(int64_t bytes) { return (bytes + 63) / 64 * 64; }

// Bytes of an FP8 weight's panel fix ranges (LinearWeight::panel_fix_start).
int64_t FixStartBytes(const LinearWeight& w) {
  return ((w.rows + kPanelRows - 1) / kPanelRows + 1) * static_cast<int64_t>(sizeof(int64_t));
}

}  // namespace

void PackPanels(LinearWeight* w, WeightArena* arena) { PackPanelsContiguous({w, 1}, arena); }

void PackPanelsContiguous(std::span<LinearWeight> weights, WeightArena* arena) {
  // The panels one after another, then the FP8 weights' fix tables.
  std::vector<std::vector<int64_t>> row_starts(weights.size());
  std::vector<bool> pack(weights.size(), false);
  int64_t total = 0, fix_bytes = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const LinearWeight& w = weights[i];
    if (!Packable(w)) continue;
    if (w.dtype == DType::kF8E4M3) {
      row_starts[i] = RowFixStarts(w);
      const int64_t fixes = row_starts[i].back();
      if (fixes * kMaxFixShare > w.rows * w.cols) continue;
      fix_bytes +=
          Lines(FixStartBytes(w)) + Lines(fixes * static_cast<int64_t>(sizeof(Fp8PanelFix)));
    }
    pack[i] = true;
    total += PackedBytes(w);  // a multiple of 64
  }
  if (total == 0) return;
  // Zeroed (the panels' padding) and aligned.
  uint8_t* out = arena->Allocate(static_cast<size_t>(total + fix_bytes));
  if (out == nullptr) return;  // no memory to pack into: the row-major kernels serve the weights
  uint8_t* fix_out = out + total;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!pack[i]) continue;
    LinearWeight& w = weights[i];
    int64_t* fix_start = nullptr;
    Fp8PanelFix* fixes = nullptr;
    if (w.dtype == DType::kF8E4M3) {
      fix_start = reinterpret_cast<int64_t*>(fix_out);
      fix_out += Lines(FixStartBytes(w));
      fixes = reinterpret_cast<Fp8PanelFix*>(fix_out);
      fix_out += Lines(row_starts[i].back() * static_cast<int64_t>(sizeof(Fp8PanelFix)));
    }
    PackInto(&w, out, row_starts[i].data(), fix_start, fixes);
    out += PackedBytes(w);
  }
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

bool ParallelWorthwhile(int64_t work) {
  return KernelThreads() > 1 && !omp_in_parallel() && work >= kParallelMinWork;
}

void DequantizeRows(const LinearWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t count = (row_end - row_begin) * w.cols;
  switch (w.dtype) {
    case DType::kF32:
      std::memcpy(out, static_cast<const float*>(w.data) + row_begin * w.cols,
                  count * sizeof(float));
      return;
    case DType::kBF16:
    case DType::kF8E4M3:
      if (ActiveSimd() >= Simd::kAvx512) return DequantizeRowsAvx512(w, row_begin, row_end, out);
      if (ActiveSimd() == Simd::kAvx2) return DequantizeRowsAvx2(w, row_begin, row_end, out);
      return DequantizeRowsScalar(w, row_begin, row_end, out);
    case DType::kF16:
      return DequantizeRowsScalar(w, row_begin, row_end, out);
    default:
      std::memset(out, 0, count * sizeof(float));
  }
}

void MatMul(const float* x, int64_t n, const LinearWeight& w, float* y) {
  if (n <= 0 || w.rows <= 0) return;
  // Products too small to share, or called from inside a parallel region (attention's per-head
  // products), run as plain loops: an OpenMP region whose `if` keeps it to one thread still
  // builds a team, which cost the absorbed attention ~20% of its time at batch 1.
  const bool parallel = ParallelWorthwhile(w.rows * w.cols * n);
  if (UsePanels(w)) {
    // Runs of contiguous panels, token groups outermost within each, so a group of x is read
    // from memory once per run: one run per thread when x spans several groups; for decode
    // (one group) kSlicesPerThread runs per thread, handed out by a SliceQueue.
    if (!parallel) return PanelRows(x, n, w, y, 0, w.rows);
    const int64_t unit = PanelUnitRows(w, n);
    const int64_t units = (w.rows + unit - 1) / unit;
    const int64_t runs_per_thread = n <= kPanelTokenGroup ? kSlicesPerThread : 1;
    const int threads = KernelThreads();
    const int64_t per_thread = std::max<int64_t>(1, std::min(runs_per_thread, units / threads));
    const int64_t tasks = threads * per_thread;
    SliceQueue queue(threads, per_thread);
#pragma omp parallel
    for (int64_t task = queue.Next(omp_get_thread_num()); task >= 0;
         task = queue.Next(omp_get_thread_num())) {
      const int64_t r0 = units * task / tasks * unit;
      const int64_t r1 = std::min(w.rows, units * (task + 1) / tasks * unit);
      if (r0 < r1) PanelRows(x, n, w, y, r0, r1);
    }
    return;
  }
  if (n <= kStreamMaxTokens) {
    const StreamInput in = MakeStreamInput(x, n, w);
    auto chunk = [&](int64_t r0) {
      StreamRows(in, n, w, y, r0, std::min(r0 + kStreamChunkRows, w.rows));
    };
    if (!parallel) {
      for (int64_t r0 = 0; r0 < w.rows; r0 += kStreamChunkRows) chunk(r0);
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < w.rows; r0 += kStreamChunkRows) chunk(r0);
    return;
  }
  // Each thread's share of rows in as few panels as fit kMaxPanelRows: OpenBLAS packs x once per
  // sgemm call, so small panels would pack it many times over.
  const int64_t threads = parallel ? KernelThreads() : 1;
  const int64_t share = (w.rows + threads - 1) / threads;
  const int64_t panel_rows = std::min(kMaxPanelRows, (share + 15) / 16 * 16);
  auto rows = [&](int64_t r0) {
    thread_local std::vector<float> panel;
    PanelGemm(x, n, w, y, r0, std::min(r0 + panel_rows, w.rows), panel);
  };
  if (!parallel) {
    for (int64_t r0 = 0; r0 < w.rows; r0 += panel_rows) rows(r0);
    return;
  }
#pragma omp parallel for schedule(dynamic)
  for (int64_t r0 = 0; r0 < w.rows; r0 += panel_rows) rows(r0);
}

namespace {

// A batch's decode-sized jobs as chunks in job order (a panel, or kStreamChunkRows rows each),
// weighted by the bytes they stream, for slices of equal cost; its prefill-sized jobs run whole
// through MatMul while it is built.
struct BatchChunks {
  struct Chunk {
    size_t job;
    int64_t r0, r1;
  };
  std::vector<StreamInput> inputs;  // by job
  std::vector<Chunk> chunks;
  std::vector<int64_t> ends;  // cumulative bytes at each chunk's end
  int64_t total = 0;

  void Build(std::span<const MatMulJob> jobs) {
    inputs.clear();
    inputs.resize(jobs.size());
    chunks.clear();
    ends.clear();
    total = 0;
    for (size_t j = 0; j < jobs.size(); ++j) {
      const MatMulJob& job = jobs[j];
      if (job.n <= 0 || job.w->rows <= 0) continue;
      if (job.n > kStreamMaxTokens) {
        MatMul(job.x, job.n, *job.w, job.y);
        continue;
      }
      // The panel kernels read x as it is; the others may want it reordered (MakeStreamInput).
      inputs[j] = UsePanels(*job.w) ? StreamInput{job.x, job.n, job.w, 0, {}}
                                    : MakeStreamInput(job.x, job.n, *job.w);
      // What a chunk costs: its bytes, times the passes over them (4 tokens per pass of the row
      // kernels; the panel kernel's 12-token passes run from cache after the first).
      const bool panels = job.w->panels != nullptr;
      const int64_t row_bytes = job.w->cols * DTypeSize(job.w->dtype) *
                                (panels ? 1 + (job.n - 1) / 8 : 1 + (job.n - 1) / 4);
      const int64_t chunk_rows = panels ? PanelUnitRows(*job.w, job.n) : kStreamChunkRows;
      for (int64_t r0 = 0; r0 < job.w->rows; r0 += chunk_rows) {
        const int64_t r1 = std::min(r0 + chunk_rows, job.w->rows);
        chunks.push_back({j, r0, r1});
        total += (r1 - r0) * row_bytes;
        ends.push_back(total);
      }
    }
  }

  void Run(std::span<const MatMulJob> jobs, const Chunk& c) const {
    const MatMulJob& job = jobs[c.job];
    StreamRows(inputs[c.job], job.n, *job.w, job.y, c.r0, c.r1);
  }

  // f(c) for each chunk index c of the slices `queue` hands thread `me`: kSlicesPerThread ×
  // threads slices of consecutive chunks, equal shares of the bytes. Each thread streams
  // through its own run of slices, then helps the others with theirs (SliceQueue).
  template <class F>
  void ForEachChunk(SliceQueue& queue, int me, int threads, const F& f) const {
    const int64_t slices = threads * kSlicesPerThread;
    for (int64_t slice = queue.Next(me); slice >= 0; slice = queue.Next(me)) {
      const int64_t lo = total * slice / slices, hi = total * (slice + 1) / slices;
      for (size_t c = static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), lo) -
                                          ends.begin());
           c < chunks.size() && ends[c] <= hi; ++c) {
        f(c);
      }
    }
  }
};

// Per calling thread, reused across calls (a decode step makes ~15 batches of ~200 chunks each).
// Callers name them through references, which a parallel region shares: inside the region a
// thread_local name would be each worker's own, empty, copy.
BatchChunks& ThreadBatch(int which) {
  thread_local BatchChunks batches[2];
  return batches[which];
}

}  // namespace

void MatMulBatch(std::span<const MatMulJob> jobs) {
  BatchChunks& batch = ThreadBatch(0);
  batch.Build(jobs);
  if (batch.chunks.empty()) return;
  if (!ParallelWorthwhile(batch.total)) {
    for (const auto& c : batch.chunks) batch.Run(jobs, c);
    return;
  }
  const int threads = KernelThreads();
  SliceQueue queue(threads, kSlicesPerThread);
#pragma omp parallel
  batch.ForEachChunk(queue, omp_get_thread_num(), threads,
                     [&](size_t c) { batch.Run(jobs, batch.chunks[c]); });
}

void MatMulBatchThen(std::span<const MatMulJob> first, std::span<const MatMulJob> second,
                     std::span<const std::vector<size_t>> after,
                     const std::function<void(size_t)>& ready) {
  // One region only where every product is decode-sized and `second` runs on the panel kernels,
  // which read x only when they multiply (the others copy it when their input is prepared, which
  // here would be before ready() wrote it); otherwise the plain sequence.
  bool fused = after.size() == second.size();
  int64_t work = 0;
  for (const MatMulJob& job : first) {
    fused = fused && job.n <= kStreamMaxTokens;
    work += std::max<int64_t>(job.n, 0) * job.w->rows * job.w->cols;
  }
  for (const MatMulJob& job : second) {
    fused = fused && job.n <= kStreamMaxTokens && (job.n <= 0 || UsePanels(*job.w));
    work += std::max<int64_t>(job.n, 0) * job.w->rows * job.w->cols;
  }
  if (!fused || !ParallelWorthwhile(work)) {
    MatMulBatch(first);
    for (size_t j = 0; j < second.size(); ++j) ready(j);
    MatMulBatch(second);
    return;
  }
  BatchChunks& one = ThreadBatch(0);
  BatchChunks& two = ThreadBatch(1);
  one.Build(first);
  two.Build(second);
  // Chunks left per first product; first products left per second product; which second
  // products wait on each first one. Each counter on a cache line of its own: the threads work on
  // different products at once, and neighbouring counters on one line moved it between cores.
  struct alignas(64) FirstState {
    std::atomic<int64_t> chunks_left{0};
  };
  struct alignas(64) SecondState {
    std::atomic<int64_t> waiting_on{0};
    std::atomic<bool> go{false};
  };
  std::vector<FirstState> firsts(first.size());
  for (const auto& c : one.chunks) {
    firsts[c.job].chunks_left.fetch_add(1, std::memory_order_relaxed);
  }
  std::vector<std::vector<size_t>> dependents(first.size());
  std::vector<SecondState> seconds(second.size());
  for (size_t j = 0; j < second.size(); ++j) {
    int64_t pending = 0;
    for (size_t i : after[j]) {
      if (i < first.size() && firsts[i].chunks_left.load(std::memory_order_relaxed) > 0) {
        dependents[i].push_back(j);
        ++pending;
      }
    }
    seconds[j].waiting_on.store(pending, std::memory_order_relaxed);
    if (pending == 0) {  // nothing to wait for
      ready(j);
      seconds[j].go.store(true, std::memory_order_relaxed);
    }
  }
  const int threads = KernelThreads();
  SliceQueue queue_one(threads, kSlicesPerThread), queue_two(threads, kSlicesPerThread);
#pragma omp parallel
  {
    const int me = omp_get_thread_num();
    // A thread's finished chunks of one first product count down together, once it moves on to
    // another product or runs out: one atomic per run of chunks rather than one per chunk.
    size_t done_job = 0;
    int64_t done = 0;
    auto count_down = [&] {
      if (done == 0) return;
      const int64_t left =
          firsts[done_job].chunks_left.fetch_sub(done, std::memory_order_acq_rel) - done;
      done = 0;
      // The thread that finishes a first product's last chunks releases the second products
      // that waited only on it, after ready() (acq_rel: every chunk's writes come before).
      if (left != 0) return;
      for (size_t j : dependents[done_job]) {
        if (seconds[j].waiting_on.fetch_sub(1, std::memory_order_acq_rel) != 1) continue;
        ready(j);
        seconds[j].go.store(true, std::memory_order_release);
      }
    };
    one.ForEachChunk(queue_one, me, threads, [&](size_t c) {
      if (one.chunks[c].job != done_job) count_down();
      one.Run(first, one.chunks[c]);
      done_job = one.chunks[c].job;
      ++done;
    });
    count_down();
    // Every first chunk is now taken by a thread that counts it down without waiting, so each
    // wait below ends once that thread gets there.
    two.ForEachChunk(queue_two, me, threads, [&](size_t c) {
      const size_t j = two.chunks[c].job;
      while (!seconds[j].go.load(std::memory_order_acquire)) _mm_pause();
      two.Run(second, two.chunks[c]);
    });
  }
}

void GemmF32(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, bool b_transposed, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  KernelThreads();  // OpenBLAS single-threaded
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), 0.0f, c, static_cast<int>(ldc));
}

void MatMulTransposed(const float* x, int64_t n, const LinearWeight& w, float* y) {
  if (n <= 0 || w.cols <= 0) return;
  if (ActiveSimd() >= Simd::kAvx512) {
    switch (w.dtype) {
      case DType::kF32:
        return TransposedAvx512<F32x512>(x, n, w, y);
      case DType::kBF16:
        return TransposedAvx512<Bf16x512>(x, n, w, y);
      case DType::kF8E4M3:
        return TransposedAvx512<Fp8x512>(x, n, w, y);
      default:
        break;
    }
  }
  // AVX2 and scalar: the weight is small (one head's slice), so a row at a time through the
  // vectorised dequantizer and the compiler's loop suffices.
  if (ActiveSimd() == Simd::kAvx2 && w.dtype != DType::kF16) {
    std::fill(y, y + n * w.cols, 0.0f);
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(w.cols));
    for (int64_t k = 0; k < w.rows; ++k) {
      DequantizeRows(w, k, k + 1, row.data());
      for (int64_t t = 0; t < n; ++t) {
        const float xk = x[t * w.rows + k];
        float* yt = y + t * w.cols;
        for (int64_t c = 0; c < w.cols; ++c) yt[c] += xk * row[c];
      }
    }
    return;
  }
  TransposedScalar(x, n, w, y);
}

}  // namespace epinfer
