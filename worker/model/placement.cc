#include "worker/model/placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

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

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromJson(const std::string& json_text,
                                                          const std::vector<bool>& moe_layers,
                                                          int32_t num_logical) {
  using Json = nlohmann::json;
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("placement: not a JSON object");
  }
  auto ranks = j.find("num_ranks");
  auto phy2log = j.find("phy2log");
  if (ranks == j.end() || !ranks->is_number_integer() || ranks->get<int64_t>() < 1 ||
      ranks->get<int64_t>() > 65536) {
    return absl::InvalidArgumentError("placement: num_ranks must be an integer in [1, 65536]");
  }
  if (phy2log == j.end() || !phy2log->is_array()) {
    return absl::InvalidArgumentError("placement: phy2log must be a list (one per MoE layer)");
  }
  const int64_t moe_count = std::count(moe_layers.begin(), moe_layers.end(), true);
  if (static_cast<int64_t>(phy2log->size()) != moe_count) {
    return absl::InvalidArgumentError(absl::StrCat("placement: ", phy2log->size(),
                                                   " phy2log layers for ", moe_count,
                                                   " MoE layers"));
  }
  ExpertPlacement placement;
  placement.version = 1;
  placement.layers.resize(moe_layers.size());
  const int32_t num_ranks = static_cast<int32_t>(ranks->get<int64_t>());
  size_t next = 0;
  for (size_t l = 0; l < moe_layers.size(); ++l) {
    if (!moe_layers[l]) continue;
    const Json& slots = (*phy2log)[next++];
    if (!slots.is_array() || slots.empty() || slots.size() % num_ranks != 0) {
      return absl::InvalidArgumentError(absl::StrCat("placement: layer ", l,
                                                     ": slot count is not a multiple of ",
                                                     num_ranks, " ranks"));
    }
    LayerPlacement& layer = placement.layers[l];
    layer.num_ranks = num_ranks;
    layer.slots_per_rank = static_cast<int32_t>(slots.size() / num_ranks);
    for (const Json& e : slots) {
      if (!e.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", l,
                                                       ": non-integer expert ", e.dump()));
      }
      layer.phy2log.push_back(static_cast<int32_t>(e.get<int64_t>()));
    }
    absl::Status status = layer.Index(num_logical);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": ", status.message()));
    }
  }
  return placement;
}

std::string ExpertPlacement::ToJson() const {
  nlohmann::json j;
  j["version"] = version;
  j["phy2log"] = nlohmann::json::array();
  for (const LayerPlacement& layer : layers) {
    if (layer.phy2log.empty()) continue;
    j["num_ranks"] = layer.num_ranks;
    j["phy2log"].push_back(layer.phy2log);
  }
  return j.dump();
}

std::vector<int32_t> ExpertPlacement::LocalExperts(int64_t layer, int32_t rank) const {
  const LayerPlacement& p = layers[layer];
  return std::vector<int32_t>(p.phy2log.begin() + static_cast<int64_t>(rank) * p.slots_per_rank,
                              p.phy2log.begin() + static_cast<int64_t>(rank + 1) * p.slots_per_rank);
}

}  // namespace epinfer
