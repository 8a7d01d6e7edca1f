#include "worker/model/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace epinfer {

absl::StatusOr<Generation> GenerateSequence(const DeepseekV3Model& model, KvCache& cache,
                                            Communicator& comm,
                                            const std::vector<int32_t>& prompt,
                                            const GenerateOptions& options) {
  const ModelConfig& c = model.config();
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", options.max_tokens, " < 1"));
  }
  RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling, c.vocab_size));
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt + max_tokens = ", total,
                                                   " exceeds the context of ",
                                                   c.max_position_embeddings));
  }
  KvBlockTable kv;
  absl::Status reserved = cache.Reserve(kv, total);
  if (!reserved.ok()) return reserved;
  Sampler sampler(options.sampling);
  Generation out;
  std::vector<int32_t> next = prompt;
  std::vector<float> logits;
  absl::Status status;
  while (true) {
    SequenceStep step{next, kv.num_tokens, &kv, false};
    status = model.Forward({&step, 1}, cache, comm, {}, &logits);
    if (!status.ok()) break;
    SampledToken sample = sampler.Next(logits.data(), c.vocab_size);
    const int32_t token = sample.token;
    const bool eos = !options.ignore_eos &&
                     std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), token) !=
                         c.eos_token_ids.end();
    const bool stop = std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(),
                                token) != options.stop_token_ids.end();
    if (eos || stop) {
      out.finish = stop ? FinishReason::kStop : FinishReason::kEos;
      break;
    }
    out.tokens.push_back(token);
    out.samples.push_back(std::move(sample));
    if (static_cast<int64_t>(out.tokens.size()) >= options.max_tokens) break;
    next.assign(1, token);
  }
  cache.Release(kv);
  if (!status.ok()) return status;
  return out;
}

}  // namespace epinfer
