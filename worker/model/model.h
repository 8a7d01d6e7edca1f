#ifndef EPINFER_WORKER_MODEL_MODEL_H_
#define EPINFER_WORKER_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "worker/comm/communicator.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/attention.h"
#include "worker/model/config.h"
#include "worker/model/moe.h"
#include "worker/model/placement.h"
#include "worker/model/rope.h"
#include "worker/model/safetensors.h"
#include "worker/model/weights.h"

namespace epinfer {

struct ForwardOptions {
  AttentionForm attention = AttentionForm::kAuto;
  // Bounds every collective of the step.
  absl::Duration collective_timeout = absl::Seconds(30);
  // Activation encodings of the MoE all-to-alls.
  MoeTransportOptions moe_transport;
};

struct ForwardStats {
  std::vector<MoeStats> moe;  // per layer (empty for dense layers)
};

struct LoadOptions {
  // Expert placement; empty: all experts on this (single) rank.
  ExpertPlacement placement;
  int32_t rank = 0;
};

// DeepSeek-V3 / R1 / V2: the forward pass of model.py on a rank's weights.
class DeepseekV3Model {
 public:
  // Reads config.json and the rank's weights from a checkpoint directory.
  static absl::StatusOr<std::unique_ptr<DeepseekV3Model>> Load(const std::string& dir,
                                                               const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ExpertPlacement& placement() const { return placement_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  const ModelWeights& weights() const { return weights_; }
  int32_t rank() const { return rank_; }

  // Runs `batch` through every layer, writing the new tokens' KV into `cache` and the logits
  // (f32 [rows, vocab_size]; rows = all new tokens of all_logits sequences + 1 per other
  // sequence, in batch order) into `logits`. Every rank of `comm` joins every MoE layer, also
  // with an empty batch. INVALID_ARGUMENT for a token outside the vocabulary or positions past
  // max_position_embeddings.
  absl::Status Forward(absl::Span<const SequenceStep> batch, KvCache& cache, Communicator& comm,
                       const ForwardOptions& options, std::vector<float>* logits,
                       ForwardStats* stats = nullptr) const;

  // A KV cache shaped for this model holding `budget_bytes`.
  absl::StatusOr<KvCache> MakeKvCache(int64_t budget_bytes, int64_t block_size_tokens = 16) const;

 private:
  struct PrivateTag {};

 public:
  explicit DeepseekV3Model(PrivateTag) {}

 private:
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  ModelWeights weights_;
  ExpertPlacement placement_;
  int32_t rank_ = 0;
  std::unique_ptr<Rope> rope_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_MODEL_H_
