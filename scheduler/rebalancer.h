#ifndef EPINFER_SCHEDULER_REBALANCER_H_
#define EPINFER_SCHEDULER_REBALANCER_H_

#include <map>
#include <optional>

#include "absl/status/statusor.h"
#include "scheduler/load_window.h"
#include "worker/model/placement.h"

namespace epinfer {

struct RebalancePolicy {
  double imbalance_threshold = 1.15;  // propose when the worst layer's max/mean exceeds this
  double min_improvement = 0.05;      // ... and EPLB predicts at least this relative gain
  double min_window_tokens = 1000;    // ... and the window holds this much traffic
  int num_groups = 1;                 // EPLB's hierarchical policy when groups divide nodes
  int num_nodes = 1;
};

struct RebalanceProposal {
  ExpertPlacement placement;
  double imbalance_before = 1.0;  // worst layer, measured (rank loads in the window)
  double imbalance_after = 1.0;   // worst layer, predicted by the new placement
};

// The decision, as a pure function of the window and the current placement: nothing (balanced
// enough, too little traffic, or no gain) or a new placement from EPLB with the same ranks and
// slots.
[[nodiscard]] std::optional<RebalanceProposal> ProposeRebalance(const LoadSnapshot& load,
                                                                const ExpertPlacement& current,
                                                                const RebalancePolicy& policy);

// Per-layer imbalance of a placement for given logical loads (each expert's load split evenly
// over its replicas).
double PredictedImbalance(const std::vector<double>& expert_load, const LayerPlacement& layer);

}  // namespace epinfer

#endif  // EPINFER_SCHEDULER_REBALANCER_H_
