#include "worker/model/placement_proto.h"

#include "absl/strings/str_cat.h"

namespace epinfer {

void PlacementToProto(const ExpertPlacement& placement, int32_t num_logical,
                      v1::ExpertPlacement* out) {
  out->Clear();
  out->set_version(placement.version);
  out->set_num_logical_experts(static_cast<uint32_t>(num_logical));
  for (size_t l = 0; l < placement.layers.size(); ++l) {
    const LayerPlacement& layer = placement.layers[l];
    if (layer.phy2log.empty()) continue;
    out->set_num_ranks(static_cast<uint32_t>(layer.num_ranks));
    out->set_slots_per_rank(static_cast<uint32_t>(layer.slots_per_rank));
    v1::LayerPlacement* p = out->add_layers();
    p->set_layer(static_cast<uint32_t>(l));
    for (int32_t e : layer.phy2log) p->add_phy2log(static_cast<uint32_t>(e));
  }
}

absl::StatusOr<ExpertPlacement> PlacementFromProto(const v1::ExpertPlacement& proto,
                                                   int64_t num_layers,
                                                   const std::vector<bool>& moe_layers,
                                                   int32_t num_logical) {
  ExpertPlacement placement;
  placement.version = proto.version();
  placement.layers.resize(static_cast<size_t>(num_layers));
  if (proto.num_ranks() == 0 || proto.slots_per_rank() == 0 ||
      proto.num_ranks() > 65536 || proto.slots_per_rank() > 65536) {
    return absl::InvalidArgumentError("placement: num_ranks and slots_per_rank must be positive");
  }
  for (const v1::LayerPlacement& p : proto.layers()) {
    if (p.layer() >= num_layers || !moe_layers[p.layer()]) {
      return absl::InvalidArgumentError(absl::StrCat("placement: layer ", p.layer(),
                                                     " is not an MoE layer of the model"));
    }
    LayerPlacement& layer = placement.layers[p.layer()];
    layer.num_ranks = static_cast<int32_t>(proto.num_ranks());
    layer.slots_per_rank = static_cast<int32_t>(proto.slots_per_rank());
    layer.phy2log.assign(p.phy2log().begin(), p.phy2log().end());
    absl::Status status = layer.Index(num_logical);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", p.layer(), ": ", status.message()));
    }
  }
  for (int64_t l = 0; l < num_layers; ++l) {
    if (moe_layers[l] && placement.layers[l].phy2log.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("placement: MoE layer ", l, " is missing"));
    }
  }
  return placement;
}

}  // namespace epinfer
