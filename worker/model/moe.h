#ifndef EPINFER_WORKER_MODEL_MOE_H_
#define EPINFER_WORKER_MODEL_MOE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/model/placement.h"
#include "worker/model/weights.h"

namespace epinfer {

// y[n, hidden] = down(silu(gate(x)) · up(x)) for a dense MLP, a shared expert or one routed expert.
void RunMlp(const MlpWeights& w, const float* x, int64_t n, float* y);

// DeepEP's layout step: which rows each rank receives and for which of its expert slots.
// Computed once per MoE layer per step from the gate's choices and reused by dispatch and
// combine. A token goes to a rank once, however many of its experts live there.
struct DispatchLayout {
  struct Entry {
    int32_t local_slot = -1;  // -1: unused
    float weight = 0;
  };
  int32_t num_ranks = 1;
  int32_t top_k = 0;
  std::vector<std::vector<int32_t>> tokens;   // [rank][row] → source token
  std::vector<std::vector<Entry>> entries;    // [rank][row * top_k + j]
};

// experts, weights: [num_tokens, top_k] from RouteToken. Replicated experts are spread over
// their replicas by token index (LayerPlacement::SlotFor).
DispatchLayout BuildDispatchLayout(const int32_t* experts, const float* weights,
                                   int64_t num_tokens, int32_t top_k,
                                   const LayerPlacement& placement);

// Per-step counters for telemetry and metrics.
struct MoeStats {
  std::vector<int64_t> tokens_per_logical_expert;  // this rank's routing decisions
  std::vector<int64_t> rows_per_local_slot;         // rows this rank's experts computed
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  double dispatch_seconds = 0;
  double combine_seconds = 0;
};

// One MoE layer: gate → layout → dispatch (all-to-all) → grouped expert compute → combine
// (all-to-all) → weighted sum, plus the shared experts. Every rank of `comm` must call it for
// every MoE layer of every step, also with num_tokens == 0.
// h: f32 [num_tokens, hidden] (post-attention norm output); out: f32 [num_tokens, hidden].
absl::Status RunMoe(const ModelConfig& config, const LayerWeights& w,
                    const LayerPlacement& placement, const float* h, int64_t num_tokens,
                    Communicator& comm, absl::Time deadline, float* out, MoeStats* stats);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_MOE_H_
