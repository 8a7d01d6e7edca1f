#include "worker/model/placement.h"

#include "absl/strings/str_cat.h"

namespace epinfer {

absl::Status LayerPlacement::Index(int32_t num_logical) {
  if (num_ranks <= 0 || slots_per_rank <= 0 ||
      phy2log.size() != static_cast<size_t>(num_ranks) * slots_per_rank) {
    return absl::InvalidArgumentError(absl::StrCat("placement: ", phy2log.size(),
                                                   " slots for ", num_ranks, " ranks × ",
                                                   slots_per_rank, " slots"));
  }
  log2phy.assign(static_cast<size_t>(num_logical), {});
  for (size_t slot = 0; slot < phy2log.size(); ++slot) {
    const int32_t e = phy2log[slot];
    if (e < 0 || e >= num_logical) {
      return absl::InvalidArgumentError(absl::StrCat("placement: slot ", slot, " holds expert ",
                                                     e, ", outside [0, ", num_logical, ")"));
    }
    log2phy[e].push_back(static_cast<int32_t>(slot));
  }
  for (int32_t e = 0; e < num_logical; ++e) {
    if (log2phy[e].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("placement: expert ", e, " has no slot"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::Contiguous(int64_t num_layers,
                                                            const std::vector<bool>& moe_layers,
                                                            int32_t num_logical,
                                                            int32_t num_ranks) {
  if (num_ranks <= 0 || num_logical % num_ranks != 0) {
    return absl::InvalidArgumentError(absl::StrCat("placement: ", num_ranks,
                                                   " ranks do not divide ", num_logical,
                                                   " routed experts"));
  }
  ExpertPlacement placement;
  placement.version = 1;
  placement.layers.resize(static_cast<size_t>(num_layers));
  for (int64_t l = 0; l < num_layers; ++l) {
    if (!moe_layers[l]) continue;
    LayerPlacement& layer = placement.layers[l];
    layer.num_ranks = num_ranks;
    layer.slots_per_rank = num_logical / num_ranks;
    for (int32_t e = 0; e < num_logical; ++e) layer.phy2log.push_back(e);
    absl::Status status = layer.Index(num_logical);
    if (!status.ok()) return status;
  }
  return placement;
}

std::vector<int32_t> ExpertPlacement::LocalExperts(int64_t layer, int32_t rank) const {
  const LayerPlacement& p = layers[layer];
  return std::vector<int32_t>(p.phy2log.begin() + static_cast<int64_t>(rank) * p.slots_per_rank,
                              p.phy2log.begin() + static_cast<int64_t>(rank + 1) * p.slots_per_rank);
}

}  // namespace epinfer
