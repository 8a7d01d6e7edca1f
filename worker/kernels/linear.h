#ifndef EPINFER_WORKER_KERNELS_LINEAR_H_
#define EPINFER_WORKER_KERNELS_LINEAR_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "worker/kernels/dtype.h"
#include "worker/kernels/simd.h"
#include "worker/kernels/weight_arena.h"

namespace epinfer {

// An FP8 panel value the panel kernels' conversion does not give exactly (see PanelConvert64 in
// linear.cc): E4M3 exponent code 0 (zero, subnormals) or a NaN code. Kernels add value × x[col]
// to row `row` of the panel's output.
struct Fp8PanelFix {
  int32_t col;
  int32_t row;  // within its panel
  // (exact − converted value, in E4M3 units) × the value's block scale (NaN for NaN codes),
  // scaled when packed: the kernels pay per fix only its multiply-add.
  float value;
};

// A linear layer's weight as the checkpoint stores it: W [rows = out features, cols = in
// features], y = x · Wᵀ. The bytes stay in their checkpoint dtype (F32, BF16, or F8_E4M3 with
// fp32 block scales); kernels convert on the fly, so BF16/FP8 weights stay compressed in memory.
struct LinearWeight {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  // F8_E4M3 only: fp32 [ceil(tensor rows/128), ceil(cols/128)] of the whole checkpoint tensor;
  // W = fp8(W) × scale_inv[(first_row + r)/128][c/128].
  const float* scale_inv = nullptr;
  // The checkpoint row that row 0 of `data` is: 0 for a whole tensor, the start of a Rows() view.
  int64_t first_row = 0;
  Device device = Device::kHost;
  // BF16 and FP8 only, optional: the same weight re-laid out by PackPanels for the AVX-512 panel
  // kernels (same dtype, the bytes of `data` in another order; FP8 scales stay in scale_inv).
  // MatMul and MatMulBatch use it where set; everything else reads `data`.
  const void* panels = nullptr;
  // FP8 panels only: panel p's fixes (Fp8PanelFix) are panel_fixes[panel_fix_start[p] ..
  // panel_fix_start[p + 1]), for the panels of this view.
  const Fp8PanelFix* panel_fixes = nullptr;
  const int64_t* panel_fix_start = nullptr;

  int64_t scale_cols() const { return (cols + kFp8BlockSize - 1) / kFp8BlockSize; }
  // Bytes a full pass over the weight reads (the decode bandwidth cost), FP8 scales included.
  int64_t bytes() const;
  // Rows [begin, end) as a weight of its own (absorbed MLA reads one head's slice of kv_b_proj);
  // FP8 views keep addressing the right scale rows.
  LinearWeight Rows(int64_t begin, int64_t end) const;
};

// Rows per panel of PackPanels' layout.
inline constexpr int64_t kPanelRows = 32;

// Re-lays a BF16 or FP8 weight out for the AVX-512 panel kernels, into memory from `arena` (which
// must outlive the weight; huge pages, see weight_arena.h), and points w->panels at it: panels of
// kPanelRows rows (the last zero-padded). BF16: for each column k, the panel's 32 values in 64
// bytes, 32-bit lane j holding row j in its low half and row 16 + j in its high half, so one load
// and two bit operations give two 16-row fp32 vectors. FP8: columns in pairs, 64 bytes per pair,
// in the order the kernels' shift-and-mask conversion emits, which is exact for all but E4M3
// exponent code 0 and NaN codes; those values get an Fp8PanelFix each (a weight with more than
// 1/16 of them stays row-major). Either way the kernel multiplies whole weight vectors by
// broadcast tokens: no per-row horizontal sums, and each converted vector serves up to 12 (BF16)
// or 8 (FP8) tokens. Does nothing for other dtypes or without AVX-512 (the row-major kernels
// serve those), or where the arena cannot map the memory.
void PackPanels(LinearWeight* w, WeightArena* arena);
// PackPanels for several weights into one buffer, one after another in order: products that run
// one after another (a head group's per-head weights) then read one stream of memory.
void PackPanelsContiguous(std::span<LinearWeight> weights, WeightArena* arena);

// y[n, w.rows] = x[n, w.cols] · Wᵀ, fp32 activations and accumulation. Small n (decode) streams
// the weight once per group of tokens with SIMD conversion (AVX-512 / AVX2 / scalar, chosen at
// run time); large n (prefill) dequantizes row panels and multiplies with OpenBLAS sgemm. A
// weight with `panels` runs the panel kernel at every n.
// Parallel over rows on KernelThreads(); serial when called inside a parallel region.
void MatMul(const float* x, int64_t n, const LinearWeight& w, float* y);

// One product of a MatMulBatch: y[n, w->rows] = x[n, w->cols] · Wᵀ.
struct MatMulJob {
  const float* x = nullptr;
  int64_t n = 0;
  const LinearWeight* w = nullptr;
  float* y = nullptr;
};

// Independent products in one parallel region: for decode-sized n each thread streams a
// contiguous share of all the jobs' weight bytes, so small products (MoE experts, q_a beside
// kv_a, gate beside up) cost one fork/join together instead of one each. Jobs with n above the
// streaming limit run one after another as MatMul.
void MatMulBatch(std::span<const MatMulJob> jobs);

// MatMulBatch(first), then ready(j) for each j, then MatMulBatch(second), where second[j] reads
// only what the first products listed in after[j] (indices into first) wrote and what ready(j)
// makes of it (an MLP: gate and up, SiLU(gate) · up, down). Decode-sized batches run in one
// parallel region: ready(j) runs on the thread that finishes the last chunk of j's first
// products, and second[j] starts then, not after all of `first` at a join. ready() may run on any
// thread, at most once per j, and must touch only j's data.
void MatMulBatchThen(std::span<const MatMulJob> first, std::span<const MatMulJob> second,
                     std::span<const std::vector<size_t>> after,
                     const std::function<void(size_t)>& ready);

// y[n, w.cols] = x[n, w.rows] · W, the product with the weight untransposed (absorbed MLA's
// q_nope · W_UK where no transposed copy of W_UK exists). Reads W once for every group of up to
// four tokens; single-threaded.
void MatMulTransposed(const float* x, int64_t n, const LinearWeight& w, float* y);

// C[m, n] = alpha · A[m, k] · op(B), all fp32 row-major with leading dimensions; op(B) = Bᵀ for
// B [n, k] when b_transposed, else B [k, n]. OpenBLAS sgemm on the calling thread (attention's
// per-head score and value products).
void GemmF32(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, bool b_transposed, float* c, int64_t ldc);

// Rows [row_begin, row_end) of W as fp32, row-major, into out[(row_end-row_begin) * cols].
void DequantizeRows(const LinearWeight& w, int64_t row_begin, int64_t row_end, float* out);

// Threads the kernels use (OpenMP); 0 = all cores. OpenBLAS runs single-threaded inside them.
void SetKernelThreads(int threads);
int KernelThreads();
// Whether a loop of `work` units (weight elements × tokens, or bytes) should fork the kernel
// threads: there are several, the caller is not inside a parallel region already, and the work
// outweighs waking them.
bool ParallelWorthwhile(int64_t work);

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_LINEAR_H_
