#ifndef EPINFER_WORKER_KERNELS_OPS_H_
#define EPINFER_WORKER_KERNELS_OPS_H_

#include <cstdint>
#include <span>

namespace epinfer {

// Element-wise and row-wise kernels on f32 activations, vectorised for the active SIMD level
// (simd.h). Single-threaded: callers run them inside their own parallel loops.

// Row-wise RMSNorm: out[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight. out may equal x.
void RmsNorm(const float* x, int64_t n, int64_t dim, const float* weight, float eps, float* out);

// SwiGLU's gating: out[i] = silu(gate[i]) · up[i]. out may equal gate or up.
void SiluMul(const float* gate, const float* up, int64_t count, float* out);

// In-place numerically stable softmax over `count` values.
void Softmax(float* x, int64_t count);

// y[i] += alpha · x[i]
void Axpy(float alpha, const float* x, int64_t count, float* y);

float Dot(const float* a, const float* b, int64_t count);

// `count` consecutive rows of a cache (one KV block's tokens), each of the caller's row length.
struct RowRun {
  const float* rows = nullptr;
  int64_t count = 0;
};

// Attention of `heads` queries over cached rows read where they lie (absorbed MLA decode over the
// latent KV cache): per head h, p = softmax(scale · q[h] · row) over every row of `runs` (dot
// products over the rows' `dim` values), then out[h * ldo + j] = Σ p · row[j] for j < out_dim
// (out_dim ≤ dim: the latent part of a row). q: [heads, dim]; probs: scratch of heads × (rows in
// runs) floats, left holding the probabilities.
void AttendRows(const float* q, int64_t heads, int64_t dim, std::span<const RowRun> runs,
                float scale, int64_t out_dim, float* probs, float* out, int64_t ldo);

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_OPS_H_
