#ifndef EPINFER_WORKER_MODEL_ATTENTION_H_
#define EPINFER_WORKER_MODEL_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/config.h"
#include "worker/model/rope.h"
#include "worker/model/weights.h"

namespace epinfer {

// How attention is computed. Naive: per-head K/V expanded from the cached latent (prefill).
// Absorbed: queries projected into the latent space, attention over the cached latent + rope key
// (decode). kAuto: absorbed for one new token, naive for several.
enum class AttentionForm { kAuto, kNaive, kAbsorbed };

// One sequence's part of a forward step: its new tokens, appended after `start_pos` tokens whose
// KV is cached in `kv` (which must have room for start_pos + tokens.size()).
struct SequenceStep {
  absl::Span<const int32_t> tokens;
  int64_t start_pos = 0;
  KvBlockTable* kv = nullptr;
  // Logits for every new token (forward) or only the last (generation).
  bool all_logits = false;
};

// Multi-head latent attention (model.py MLA.forward) of one layer for every new token of the
// batch: writes the tokens' normalised latent and roped key into `cache`, attends causally over
// each sequence's cached positions, and projects out.
// h: f32 [tokens, hidden_size] (input_layernorm output); positions: [tokens];
// out: f32 [tokens, hidden_size].
void MlaAttention(const ModelConfig& config, const LayerWeights& w, const Rope& rope,
                  int64_t layer, const float* h, absl::Span<const SequenceStep> batch,
                  const std::vector<int64_t>& positions, KvCache& cache, AttentionForm form,
                  float* out);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_ATTENTION_H_
