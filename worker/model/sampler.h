#ifndef EPINFER_WORKER_MODEL_SAMPLER_H_
#define EPINFER_WORKER_MODEL_SAMPLER_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace epinfer {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = 0;         // 0: off
  uint64_t seed = 0;
  int32_t logprobs = 0;      // alternatives to report per token, 0..20
};

// INVALID_ARGUMENT naming the field when an option is out of range.
absl::Status ValidateSamplingOptions(const SamplingOptions& options, int64_t vocab_size);

struct SampledToken {
  int32_t token = 0;
  // log-softmax of the raw logits (before temperature and filtering), as vLLM reports them.
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // options.logprobs best, descending
};

// Picks tokens for one sequence. Its random stream depends only on the seed and the number of
// tokens drawn, so a sequence samples the same tokens alone or in any batch.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  SampledToken Next(const float* logits, int64_t vocab_size);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_SAMPLER_H_
