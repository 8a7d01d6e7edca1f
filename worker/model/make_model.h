#ifndef EPINFER_WORKER_MODEL_MAKE_MODEL_H_
#define EPINFER_WORKER_MODEL_MAKE_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/kernels/dtype.h"

namespace epinfer {

struct MakeModelOptions {
  // "tiny" (tests), "small" (benchmarks), "tiny-v2" (V2-style: softmax gate, greedy top-k, no
  // correction bias, no q_lora).
  std::string preset = "tiny";
  // F32, BF16 or F8_E4M3 (linear weights in FP8 with 128×128 scale_inv blocks, the rest BF16, as
  // DeepSeek's FP8 checkpoints).
  DType dtype = DType::kBF16;
  uint64_t seed = 0;
  std::string out_dir;
  int shards = 1;
  bool q_lora = true;
  // Overrides of the preset (0: keep).
  int64_t n_routed_experts = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t v_head_dim = 0;
};

// The preset's config.json text (Hugging Face DeepSeek-V3 layout).
absl::StatusOr<std::string> PresetConfigJson(const MakeModelOptions& options);

// Writes config.json and random weights in the exact HF DeepSeek-V3 checkpoint layout, sharded
// into `shards` files with model.safetensors.index.json when shards > 1. Weights are seeded
// (same seed → same bytes) and non-degenerate: activations stay O(1) through the layers, expert
// choice varies across tokens, and e_score_correction_bias changes some choices.
absl::Status MakeModel(const MakeModelOptions& options);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_MAKE_MODEL_H_
