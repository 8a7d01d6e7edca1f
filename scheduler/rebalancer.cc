#include "scheduler/rebalancer.h"

#include <algorithm>

#include "scheduler/eplb.h"

namespace epinfer {

double PredictedImbalance(const std::vector<double>& expert_load, const LayerPlacement& layer) {
  return GpuImbalance(expert_load, layer.phy2log, layer.num_ranks);
}

std::optional<RebalanceProposal> ProposeRebalance(const LoadSnapshot& load,
                                                  const ExpertPlacement& current,
                                                  const RebalancePolicy& policy) {
  if (load.total_tokens < policy.min_window_tokens) return std::nullopt;
  RebalanceProposal proposal;
  proposal.placement = current;
  double before = 1.0, after = 1.0;
  for (size_t l = 0; l < current.layers.size(); ++l) {
    const LayerPlacement& layer = current.layers[l];
    if (layer.phy2log.empty()) continue;
    auto loads = load.expert_load.find(static_cast<uint32_t>(l));
    if (loads == load.expert_load.end() || loads->second.size() != layer.log2phy.size()) {
      continue;
    }
    // Measured rank load when telemetry covers the current version, else predicted.
    auto measured = load.rank_load.find(static_cast<uint32_t>(l));
    const double layer_before =
        measured != load.rank_load.end() && load.placement_version == current.version
            ? Imbalance(measured->second, layer.num_ranks)
            : PredictedImbalance(loads->second, layer);
    EplbInput in;
    in.weight = {loads->second};
    in.num_replicas = layer.num_ranks * layer.slots_per_rank;
    in.num_gpus = layer.num_ranks;
    in.num_nodes = std::max(1, policy.num_nodes);
    in.num_groups = std::max(1, policy.num_groups);
    absl::StatusOr<EplbResult> result = RebalanceExperts(in);
    if (!result.ok()) return std::nullopt;
    LayerPlacement next = layer;
    next.phy2log = result->phy2log[0];
    if (!next.Index(static_cast<int32_t>(layer.log2phy.size())).ok()) return std::nullopt;
    const double layer_after = PredictedImbalance(loads->second, next);
    before = std::max(before, layer_before);
    after = std::max(after, layer_after);
    proposal.placement.layers[l] = std::move(next);
  }
  proposal.imbalance_before = before;
  proposal.imbalance_after = after;
  if (before <= policy.imbalance_threshold) return std::nullopt;
  if (after > before * (1.0 - policy.min_improvement)) return std::nullopt;
  return proposal;
}

}  // namespace epinfer
