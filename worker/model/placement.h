#ifndef EPINFER_WORKER_MODEL_PLACEMENT_H_
#define EPINFER_WORKER_MODEL_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace epinfer {

// Where the routed experts of one MoE layer live: num_ranks × slots_per_rank physical slots,
// phy2log[slot] = logical expert (slot = rank * slots_per_rank + local slot). A logical expert
// may have several replicas (redundant experts, DeepSeek's EPLB).
struct LayerPlacement {
  int32_t num_ranks = 1;
  int32_t slots_per_rank = 0;
  std::vector<int32_t> phy2log;
  // Derived: replicas of each logical expert, physical slot ids in ascending order.
  std::vector<std::vector<int32_t>> log2phy;

  // Fills log2phy; INVALID_ARGUMENT if a slot names an expert outside [0, num_logical) or an
  // expert has no slot.
  absl::Status Index(int32_t num_logical);
  // The replica that token `token` uses for `logical`: spread deterministically so that every
  // rank computing the layout picks the same one.
  int32_t SlotFor(int32_t logical, int64_t token) const {
    const std::vector<int32_t>& replicas = log2phy[logical];
    return replicas[static_cast<size_t>(token) % replicas.size()];
  }
};

// A placement for every layer of a model (dense layers have an empty LayerPlacement).
struct ExpertPlacement {
  // From JSON {"num_ranks": N, "phy2log": [[slot → logical expert] per MoE layer, in layer
  // order]} (the phy2log that `epinfer eplb` prints). Every layer must have N × S slots and give
  // each of the num_logical experts at least one; errors name the layer and slot.
  static absl::StatusOr<ExpertPlacement> FromJson(const std::string& json_text,
                                                  const std::vector<bool>& moe_layers,
                                                  int32_t num_logical);
  std::string ToJson() const;

  uint64_t version = 0;
  std::vector<LayerPlacement> layers;

  // The default: each MoE layer's n_routed_experts split contiguously over num_ranks ranks
  // (requires num_ranks to divide them).
  static absl::StatusOr<ExpertPlacement> Contiguous(int64_t num_layers,
                                                    const std::vector<bool>& moe_layers,
                                                    int32_t num_logical, int32_t num_ranks);
  // Logical experts whose weights `rank` holds in `layer`, one per local slot.
  std::vector<int32_t> LocalExperts(int64_t layer, int32_t rank) const;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_PLACEMENT_H_
