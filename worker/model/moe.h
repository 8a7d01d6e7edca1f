#ifndef EPINFER_WORKER_MODEL_MOE_H_
#define EPINFER_WORKER_MODEL_MOE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "worker/comm/communicator.h"
#include "worker/model/placement.h"
#include "worker/model/weights.h"

namespace epinfer {

// y[n, hidden] = down(silu(gate(x)) · up(x)) for a dense MLP, a shared expert or one routed expert.
void RunMlp(const MlpWeights& w, const float* x, int64_t n, float* y);

// One SwiGLU MLP product of RunMlps: y[n, hidden] = MLP_w(x[n, hidden]).
struct MlpJob {
  const MlpWeights* w = nullptr;
  const float* x = nullptr;
  int64_t n = 0;
  float* y = nullptr;
};
// Independent MLPs (a layer's experts) as two dependent batches of products, gate and up then
// down (see MatMulBatchThen); `alongside`, products that depend on none of them, run in the
// first batch.
void RunMlps(absl::Span<const MlpJob> jobs, absl::Span<const MatMulJob> alongside = {});

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
  int64_t num_tokens = 0;
  std::vector<std::vector<int32_t>> tokens;   // [rank][row] → source token
  std::vector<std::vector<Entry>> entries;    // [rank][row * top_k + j]
};

// experts, weights: [num_tokens, top_k] from RouteToken. Replicated experts are spread over
// their replicas by token index plus `source_rank`, the sending rank (LayerPlacement::SlotFor):
// ranks that each send one token a step (decode) still spread a hot expert over its replicas.
DispatchLayout BuildDispatchLayout(const int32_t* experts, const float* weights,
                                   int64_t num_tokens, int32_t top_k,
                                   const LayerPlacement& placement, int32_t source_rank);

// Per-step counters for telemetry and metrics.
struct MoeStats {
  std::vector<int64_t> tokens_per_logical_expert;  // this rank's routing decisions
  std::vector<int64_t> rows_per_local_slot;         // rows this rank's experts computed
  std::vector<int64_t> bytes_sent_to;               // [peer rank], dispatch + combine
  std::vector<int64_t> bytes_received_from;         // [peer rank], dispatch + combine
  double dispatch_seconds = 0;
  double combine_seconds = 0;
};

// How activations travel. DeepSeek dispatches FP8 (e4m3 with one f32 scale per 128 channels)
// and combines BF16; F32 both ways is exact (EP results equal single-rank results).
struct MoeTransportOptions {
  DType dispatch = DType::kF32;  // kF32, kBF16 or kF8E4M3
  DType combine = DType::kF32;   // kF32 or kBF16
};

// Bytes of one encoded activation row, and the codec (F8_E4M3: [ceil(hidden/128) f32 scales]
// then [hidden e4m3 bytes], scale = amax/448 per 128 channels).
int64_t ActivationBytes(int64_t hidden, DType dtype);
void EncodeActivations(const float* x, int64_t hidden, DType dtype, uint8_t* out);
void DecodeActivations(const uint8_t* in, int64_t hidden, DType dtype, float* x);
// x += decoded row (combine's receive side: no temporary row).
void DecodeAddActivations(const uint8_t* in, int64_t hidden, DType dtype, float* x);

// DeepEP's Buffer::dispatch / Buffer::combine over a Communicator, for one MoE layer of one
// step. Dispatch sends each token's activations once to every rank that holds one of its
// experts, with the (local slot, gate weight) pairs for that rank; the receiving rank runs its
// experts on the rows and sums each row's weighted outputs; Combine sends those sums back, where
// they are added to the tokens' outputs. Both are collectives: every rank calls both, always.
class ExpertDispatcher {
 public:
  ExpertDispatcher(Communicator& comm, const MoeTransportOptions& transport, int64_t hidden,
                   int32_t top_k, int64_t local_slots);

  // x: f32 [num_tokens, hidden]. Afterwards received_rows() and rows_of_slot() describe what
  // this rank's experts must compute.
  absl::Status Dispatch(const float* x, const DispatchLayout& layout, absl::Time deadline);
  int64_t num_received() const { return num_received_; }
  // f32 [num_received, hidden], decoded. In a per-thread buffer reused across layers and steps
  // (fresh memory would cost page faults on every row): valid until the next Dispatch on this
  // thread.
  const float* received_rows() const { return received_x_; }
  // For each local slot: (received row, gate weight) pairs.
  const std::vector<std::vector<std::pair<int64_t, float>>>& rows_of_slot() const {
    return rows_of_slot_;
  }

  // expert_sums: f32 [num_received, hidden], each received row's weighted expert outputs.
  // Adds every token's returned sums into out: f32 [num_tokens, hidden].
  absl::Status Combine(const float* expert_sums, const DispatchLayout& layout,
                       absl::Time deadline, float* out);

  // Filled by Dispatch/Combine: bytes per peer, seconds in each all-to-all.
  MoeStats& stats() { return stats_; }

 private:
  Communicator& comm_;
  const MoeTransportOptions transport_;
  const int64_t hidden_;
  const int32_t top_k_;
  std::vector<int64_t> row_offset_;  // [rank + 1]: received rows by source rank
  int64_t num_received_ = 0;
  const float* received_x_ = nullptr;
  std::vector<std::vector<std::pair<int64_t, float>>> rows_of_slot_;
  MoeStats stats_;
};

// One MoE layer: gate → layout → dispatch (all-to-all) → grouped expert compute → combine
// (all-to-all) → weighted sum, plus the shared experts. Every rank of `comm` must call it for
// every MoE layer of every step, also with num_tokens == 0.
// h: f32 [num_tokens, hidden] (post-attention norm output); out: f32 [num_tokens, hidden].
absl::Status RunMoe(const ModelConfig& config, const LayerWeights& w,
                    const LayerPlacement& placement, const float* h, int64_t num_tokens,
                    Communicator& comm, absl::Time deadline, const MoeTransportOptions& transport,
                    float* out, MoeStats* stats);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_MOE_H_
