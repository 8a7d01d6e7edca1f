#include "scheduler/eplb.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace epinfer {

void BalancedPacking(const std::vector<double>& weight, int num_packs, std::vector<int>* pack,
                     std::vector<int>* rank) {
  const int n = static_cast<int>(weight.size());
  const int per_pack = n / num_packs;
  pack->assign(static_cast<size_t>(n), -1);
  rank->assign(static_cast<size_t>(n), -1);
  if (per_pack == 1) {
    std::iota(pack->begin(), pack->end(), 0);
    std::fill(rank->begin(), rank->end(), 0);
    return;
  }
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weight[a] > weight[b]; });
  std::vector<double> load(static_cast<size_t>(num_packs), 0.0);
  std::vector<int> items(static_cast<size_t>(num_packs), 0);
  for (int item : order) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p) {
      if (items[p] < per_pack && (best < 0 || load[p] < load[best])) best = p;
    }
    (*pack)[item] = best;
    (*rank)[item] = items[best]++;
    load[best] += weight[item];
  }
}

void ReplicateExperts(const std::vector<double>& weight, int num_phy, std::vector<int>* phy2log,
                      std::vector<int>* rank, std::vector<int>* logcnt) {
  const int num_log = static_cast<int>(weight.size());
  phy2log->resize(static_cast<size_t>(num_phy));
  rank->assign(static_cast<size_t>(num_phy), 0);
  logcnt->assign(static_cast<size_t>(num_log), 1);
  std::iota(phy2log->begin(), phy2log->begin() + num_log, 0);
  for (int i = num_log; i < num_phy; ++i) {
    int best = 0;
    for (int e = 1; e < num_log; ++e) {
      if (weight[e] / (*logcnt)[e] > weight[best] / (*logcnt)[best]) best = e;
    }
    (*phy2log)[i] = best;
    (*rank)[i] = (*logcnt)[best]++;
  }
}

namespace {

std::vector<int> Inverse(const std::vector<int>& perm) {
  std::vector<int> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[perm[i]] = static_cast<int>(i);
  return inv;
}

// eplb.py rebalance_experts_hierarchical for one layer.
void Hierarchical(const std::vector<double>& weight, int num_phy, int num_groups, int num_nodes,
                  int num_gpus, std::vector<int32_t>* pphy2log, std::vector<int>* pphyrank,
                  std::vector<int32_t>* logcnt_out) {
  const int num_log = static_cast<int>(weight.size());
  const int group_size = num_log / num_groups;
  const int groups_per_node = num_groups / num_nodes;
  const int phy_per_gpu = num_phy / num_gpus;
  const int log_per_node = num_log / num_nodes;
  const int phy_per_node = num_phy / num_nodes;

  // Step 1: pack groups onto nodes; "mlog" numbers experts node by node.
  std::vector<double> tokens_per_group(static_cast<size_t>(num_groups), 0.0);
  for (int e = 0; e < num_log; ++e) tokens_per_group[e / group_size] += weight[e];
  std::vector<int> group_pack, group_rank;
  BalancedPacking(tokens_per_group, num_nodes, &group_pack, &group_rank);
  std::vector<int> log2mlog(static_cast<size_t>(num_log));
  for (int e = 0; e < num_log; ++e) {
    const int g = e / group_size;
    log2mlog[e] = (group_pack[g] * groups_per_node + group_rank[g]) * group_size + e % group_size;
  }
  const std::vector<int> mlog2log = Inverse(log2mlog);

  pphy2log->assign(static_cast<size_t>(num_phy), 0);
  pphyrank->assign(static_cast<size_t>(num_phy), 0);
  std::vector<int> mlogcnt_all(static_cast<size_t>(num_log));
  for (int node = 0; node < num_nodes; ++node) {
    // Step 2: replicas within the node.
    std::vector<double> tokens_per_mlog(static_cast<size_t>(log_per_node));
    for (int m = 0; m < log_per_node; ++m) {
      tokens_per_mlog[m] = weight[mlog2log[node * log_per_node + m]];
    }
    std::vector<int> phy2mlog, phyrank, mlogcnt;
    ReplicateExperts(tokens_per_mlog, phy_per_node, &phy2mlog, &phyrank, &mlogcnt);
    for (int m = 0; m < log_per_node; ++m) mlogcnt_all[node * log_per_node + m] = mlogcnt[m];
    // Step 3: pack the node's replicas onto its GPUs.
    std::vector<double> tokens_per_phy(static_cast<size_t>(phy_per_node));
    for (int p = 0; p < phy_per_node; ++p) {
      tokens_per_phy[p] = tokens_per_mlog[phy2mlog[p]] / mlogcnt[phy2mlog[p]];
    }
    std::vector<int> pack, rank;
    BalancedPacking(tokens_per_phy, num_gpus / num_nodes, &pack, &rank);
    std::vector<int> phy2pphy(static_cast<size_t>(phy_per_node));
    for (int p = 0; p < phy_per_node; ++p) phy2pphy[p] = pack[p] * phy_per_gpu + rank[p];
    const std::vector<int> pphy2phy = Inverse(phy2pphy);
    for (int q = 0; q < phy_per_node; ++q) {
      const int mlog = phy2mlog[pphy2phy[q]] + node * log_per_node;
      (*pphy2log)[node * phy_per_node + q] = mlog2log[mlog];
      (*pphyrank)[node * phy_per_node + q] = phyrank[pphy2phy[q]];
    }
  }
  logcnt_out->assign(static_cast<size_t>(num_log), 0);
  for (int e = 0; e < num_log; ++e) (*logcnt_out)[e] = mlogcnt_all[log2mlog[e]];
}

}  // namespace

absl::StatusOr<EplbResult> RebalanceExperts(const EplbInput& in) {
  if (in.weight.empty()) return absl::InvalidArgumentError("weight: no layers");
  const size_t num_log = in.weight[0].size();
  if (num_log == 0) return absl::InvalidArgumentError("weight[0]: no experts");
  for (size_t l = 0; l < in.weight.size(); ++l) {
    if (in.weight[l].size() != num_log) {
      return absl::InvalidArgumentError(absl::StrCat("weight[", l, "]: ", in.weight[l].size(),
                                                     " experts, weight[0] has ", num_log));
    }
    for (size_t e = 0; e < num_log; ++e) {
      if (!std::isfinite(in.weight[l][e]) || in.weight[l][e] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("weight[", l, "][", e, "] = ",
                                                       in.weight[l][e], " is not a load >= 0"));
      }
    }
  }
  if (in.num_gpus < 1 || in.num_nodes < 1 || in.num_groups < 1) {
    return absl::InvalidArgumentError("num_gpus, num_nodes and num_groups must be >= 1");
  }
  if (in.num_replicas < static_cast<int>(num_log)) {
    return absl::InvalidArgumentError(absl::StrCat("num_replicas ", in.num_replicas,
                                                   " is fewer than the ", num_log, " experts"));
  }
  if (in.num_replicas % in.num_gpus != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_replicas ", in.num_replicas,
                                                   " is not a multiple of num_gpus ", in.num_gpus));
  }
  if (in.num_gpus % in.num_nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_gpus ", in.num_gpus,
                                                   " is not a multiple of num_nodes ", in.num_nodes));
  }
  if (num_log % in.num_groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_groups ", in.num_groups,
                                                   " does not divide the ", num_log, " experts"));
  }
  // Hierarchical when groups divide over nodes (and experts and replicas over nodes), else
  // global: one node, one group.
  const bool hierarchical = in.num_groups % in.num_nodes == 0 && num_log % in.num_nodes == 0 &&
                            in.num_replicas % in.num_nodes == 0;
  const int groups = hierarchical ? in.num_groups : 1;
  const int nodes = hierarchical ? in.num_nodes : 1;
  const int per_node_log = static_cast<int>(num_log) / nodes;
  if (in.num_replicas / nodes < per_node_log) {
    return absl::InvalidArgumentError("fewer replicas per node than experts per node");
  }
  EplbResult result;
  int max_count = 0;
  std::vector<std::vector<int>> ranks;
  for (const std::vector<double>& layer : in.weight) {
    std::vector<int32_t> phy2log, logcnt;
    std::vector<int> rank;
    Hierarchical(layer, in.num_replicas, groups, nodes, in.num_gpus, &phy2log, &rank, &logcnt);
    max_count = std::max(max_count, *std::max_element(logcnt.begin(), logcnt.end()));
    result.phy2log.push_back(std::move(phy2log));
    result.logcnt.push_back(std::move(logcnt));
    ranks.push_back(std::move(rank));
  }
  for (size_t l = 0; l < in.weight.size(); ++l) {
    std::vector<std::vector<int32_t>> log2phy(num_log, std::vector<int32_t>(max_count, -1));
    for (int p = 0; p < in.num_replicas; ++p) log2phy[result.phy2log[l][p]][ranks[l][p]] = p;
    result.log2phy.push_back(std::move(log2phy));
  }
  return result;
}

double GpuImbalance(const std::vector<double>& weight, const std::vector<int32_t>& phy2log,
                    int num_gpus) {
  std::vector<int> count(weight.size(), 0);
  for (int32_t e : phy2log) ++count[e];
  const size_t per_gpu = phy2log.size() / num_gpus;
  std::vector<double> load(static_cast<size_t>(num_gpus), 0.0);
  for (size_t p = 0; p < phy2log.size(); ++p) {
    load[p / per_gpu] += weight[phy2log[p]] / count[phy2log[p]];
  }
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / num_gpus;
  return mean > 0 ? *std::max_element(load.begin(), load.end()) / mean : 1.0;
}

}  // namespace epinfer
