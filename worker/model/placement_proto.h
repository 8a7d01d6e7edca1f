#ifndef EPINFER_WORKER_MODEL_PLACEMENT_PROTO_H_
#define EPINFER_WORKER_MODEL_PLACEMENT_PROTO_H_

#include "absl/status/statusor.h"
#include "epinfer/v1/cluster.pb.h"
#include "worker/model/placement.h"

namespace epinfer {

// ExpertPlacement ↔ epinfer.v1.ExpertPlacement (only MoE layers travel).
void PlacementToProto(const ExpertPlacement& placement, int32_t num_logical,
                      v1::ExpertPlacement* out);
// Validates every layer against the model: `num_layers`, which are MoE, `num_logical` experts.
absl::StatusOr<ExpertPlacement> PlacementFromProto(const v1::ExpertPlacement& proto,
                                                   int64_t num_layers,
                                                   const std::vector<bool>& moe_layers,
                                                   int32_t num_logical);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_PLACEMENT_PROTO_H_
