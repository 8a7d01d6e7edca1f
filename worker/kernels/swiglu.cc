#include "worker/kernels/swiglu.h"

#include <vector>

#include "worker/kernels/ops.h"

namespace epinfer {

void SwiGluBatch(std::span<const SwiGluJob> jobs) {
  // gate and up outputs of every job, [n, intermediate] each, back to back.
  std::vector<int64_t> offset(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    offset[j + 1] = offset[j] + 2 * jobs[j].n * jobs[j].gate_proj->rows;
  }
  std::vector<float> hidden(static_cast<size_t>(offset.back()));
  std::vector<MatMulJob> products;
  products.reserve(2 * jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const SwiGluJob& job = jobs[j];
    float* gate = hidden.data() + offset[j];
    products.push_back({job.x, job.n, job.gate_proj, gate});
    products.push_back({job.x, job.n, job.up_proj, gate + job.n * job.gate_proj->rows});
  }
  MatMulBatch(products);
  products.clear();
  for (size_t j = 0; j < jobs.size(); ++j) {
    const SwiGluJob& job = jobs[j];
    float* gate = hidden.data() + offset[j];
    const int64_t count = job.n * job.gate_proj->rows;
    SiluMul(gate, gate + count, count, gate);
    products.push_back({gate, job.n, job.down_proj, job.y});
  }
  MatMulBatch(products);
}

}  // namespace epinfer
