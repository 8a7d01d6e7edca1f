#ifndef EPINFER_WORKER_MODEL_GENERATE_H_
#define EPINFER_WORKER_MODEL_GENERATE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/model.h"
#include "worker/model/sampler.h"

namespace epinfer {

struct GenerateOptions {
  SamplingOptions sampling;
  int64_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
};

enum class FinishReason { kLength, kEos, kStop };

struct Generation {
  std::vector<int32_t> tokens;  // generated ids (a matched stop or EOS token excluded)
  std::vector<SampledToken> samples;
  FinishReason finish = FinishReason::kLength;
};

// One sequence, start to end: prefill the prompt, then decode one token per step through the KV
// cache until max_tokens, EOS (config's eos_token_id unless ignore_eos) or a stop token.
absl::StatusOr<Generation> GenerateSequence(const DeepseekV3Model& model, KvCache& cache,
                                            Communicator& comm,
                                            const std::vector<int32_t>& prompt,
                                            const GenerateOptions& options);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_GENERATE_H_
