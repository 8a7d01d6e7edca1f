#ifndef EPINFER_SCHEDULER_EPLB_H_
#define EPINFER_SCHEDULER_EPLB_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace epinfer {

// DeepSeek's expert-parallelism load balancer (EPLB, eplb.py): replicate hot experts into
// redundant slots and pack the replicas onto GPUs so every GPU carries about the same load.
// Hierarchical when the expert groups divide evenly over the nodes (groups → nodes, replicas
// within each node, replicas → the node's GPUs), global otherwise (one node, one group).
// Sorting is stable (ties keep the lower index first), so the result is deterministic.
struct EplbInput {
  std::vector<std::vector<double>> weight;  // [layers][logical experts], load (e.g. tokens)
  int num_replicas = 0;                     // physical expert slots, a multiple of num_gpus
  int num_groups = 1;
  int num_nodes = 1;
  int num_gpus = 1;                         // a multiple of num_nodes
};

struct EplbResult {
  std::vector<std::vector<int32_t>> phy2log;               // [layers][num_replicas]
  std::vector<std::vector<std::vector<int32_t>>> log2phy;  // [layers][experts][max count], -1 pad
  std::vector<std::vector<int32_t>> logcnt;                // [layers][experts]
};

// INVALID_ARGUMENT for non-divisible counts, negative or non-finite loads, empty or ragged
// layers, fewer replicas than experts.
absl::StatusOr<EplbResult> RebalanceExperts(const EplbInput& input);

// The pieces, as eplb.py names them (exposed for tests).
// Packs items [n] into num_packs packs of n / num_packs items each, heaviest first into the
// lightest pack with room. Outputs pack index and rank in pack per item.
void BalancedPacking(const std::vector<double>& weight, int num_packs, std::vector<int>* pack,
                     std::vector<int>* rank);
// Adds num_phy - num_log replicas one at a time to the expert with the largest load per replica.
void ReplicateExperts(const std::vector<double>& weight, int num_phy, std::vector<int>* phy2log,
                      std::vector<int>* rank, std::vector<int>* logcnt);

// max / mean of the per-GPU load when `weight[l]` is spread evenly over each expert's replicas:
// the imbalance the balancer minimises (1.0 is perfect).
double GpuImbalance(const std::vector<double>& weight, const std::vector<int32_t>& phy2log,
                    int num_gpus);

}  // namespace epinfer

#endif  // EPINFER_SCHEDULER_EPLB_H_
