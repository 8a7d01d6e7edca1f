#ifndef EPINFER_WORKER_KERNELS_SWIGLU_H_
#define EPINFER_WORKER_KERNELS_SWIGLU_H_

#include <cstdint>
#include <span>

#include "worker/kernels/linear.h"

namespace epinfer {

// One SwiGLU MLP applied to n rows: y[n, hidden] = down(silu(gate(x)) · up(x)), with
// gate/up [intermediate, hidden] and down [hidden, intermediate] (DeepSeek-V3 MLP and Expert).
struct SwiGluJob {
  const LinearWeight* gate_proj = nullptr;
  const LinearWeight* up_proj = nullptr;
  const LinearWeight* down_proj = nullptr;
  const float* x = nullptr;  // f32 [n, hidden]
  int64_t n = 0;
  float* y = nullptr;  // f32 [n, hidden]
};

// Every job's MLP with two fork/joins in all: one MatMulBatch for all gate and up products, one
// for all down products. A decode step's routed experts, shared experts and dense MLP each have
// a few rows, where a parallel region per product costs more than the product.
void SwiGluBatch(std::span<const SwiGluJob> jobs);

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_SWIGLU_H_
