#ifndef EPINFER_WORKER_KERNELS_OPS_H_
#define EPINFER_WORKER_KERNELS_OPS_H_

#include <cstdint>

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

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_OPS_H_
