#ifndef EPINFER_WORKER_KERNELS_LINEAR_H_
#define EPINFER_WORKER_KERNELS_LINEAR_H_

#include <cstdint>

#include "worker/kernels/dtype.h"

namespace epinfer {

// A linear layer's weight as the checkpoint stores it: W [rows = out features, cols = in
// features], y = x · Wᵀ. The bytes stay in their checkpoint dtype (F32, BF16, or F8_E4M3 with
// fp32 block scales); kernels convert on the fly, so BF16/FP8 weights stay compressed in memory.
struct LinearWeight {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  // F8_E4M3 only: fp32 [ceil(rows/128), ceil(cols/128)]; W = fp8(W) × scale_inv[r/128][c/128].
  const float* scale_inv = nullptr;
  Device device = Device::kHost;

  int64_t scale_cols() const { return (cols + kFp8BlockSize - 1) / kFp8BlockSize; }
  // Bytes a full pass over the weight reads (the decode bandwidth cost).
  int64_t bytes() const;
};

// y[n, w.rows] = x[n, w.cols] · Wᵀ, fp32 activations and accumulation. Small n (decode) streams
// the weight once with SIMD conversion (AVX-512 / AVX2 / scalar, chosen at run time); large n
// (prefill) dequantizes row panels and multiplies with OpenBLAS sgemm. Parallel over rows.
void MatMul(const float* x, int64_t n, const LinearWeight& w, float* y);

// Rows [row_begin, row_end) of W as fp32, row-major, into out[(row_end-row_begin) * cols].
void DequantizeRows(const LinearWeight& w, int64_t row_begin, int64_t row_end, float* out);

// Threads the kernels use (OpenMP); 0 = all cores. OpenBLAS runs single-threaded inside them.
void SetKernelThreads(int threads);
int KernelThreads();

// The SIMD level chosen at run time: "avx512", "avx2" or "scalar". EPINFER_SIMD=avx2|scalar
// in the environment caps it (tests run every path on one machine).
const char* SimdLevel();
// Selects a SIMD level at or below what the CPU supports; false if it cannot (tests run every
// path on one machine).
bool SetSimdLevel(const char* level);

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_LINEAR_H_
