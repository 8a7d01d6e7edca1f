#include "router/cluster_map.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace epinfer {

ClusterMap::ClusterMap(Options options) : options_(std::move(options)) {}

absl::StatusOr<ExpertPlacement> ClusterMap::DefaultPlacement(const Options& o, int ranks) {
  if (ranks < 1) return absl::InvalidArgumentError("placement for no ranks");
  ExpertPlacement placement;
  placement.version = 1;
  placement.layers.resize(static_cast<size_t>(o.num_layers));
  const int32_t experts = o.num_logical_experts;
  const int32_t per_rank = (experts + ranks - 1) / ranks + std::max(0, o.redundant_slots_per_rank);
  for (int64_t l = 0; l < o.num_layers; ++l) {
    if (!o.moe_layers[l]) continue;
    LayerPlacement& layer = placement.layers[l];
    layer.num_ranks = ranks;
    layer.slots_per_rank = per_rank;
    for (int32_t slot = 0; slot < ranks * per_rank; ++slot) layer.phy2log.push_back(slot % experts);
    absl::Status status = layer.Index(experts);
    if (!status.ok()) return status;
  }
  return placement;
}

bool ClusterMap::InEpoch(const std::string& worker_id) const {
  return epoch_ && std::find(epoch_->ranks.begin(), epoch_->ranks.end(), worker_id) !=
                       epoch_->ranks.end();
}

bool ClusterMap::Complete() const {
  if (!epoch_) return false;
  for (const std::string& id : epoch_->ranks) {
    if (members_.at(id).info.communicator_address.empty()) return false;
  }
  return true;
}

absl::StatusOr<Assignment> ClusterMap::Register(const WorkerInfo& info, absl::Time now) {
  if (info.worker_id.empty() || info.worker_id.size() > 256) {
    return absl::InvalidArgumentError("worker_id must be 1..256 bytes");
  }
  if (info.host.empty() || info.port <= 0 || info.port > 65535) {
    return absl::InvalidArgumentError("host and a port in 1..65535 are required");
  }
  if (info.communicator_address.size() > (64 << 10)) {
    return absl::InvalidArgumentError("communicator_address exceeds 64 KiB");
  }
  absl::MutexLock lock(&mu_);
  if (InEpoch(info.worker_id) && !epoch_->broken) {
    Member& m = members_[info.worker_id];
    // A member re-registering without an address restarted: it needs a new epoch.
    if (!info.communicator_address.empty() || m.info.communicator_address.empty()) {
      m.info = info;
      m.last_seen = now;
      m.dead = false;
      Assignment a;
      a.epoch = epoch_->number;
      a.world_size = static_cast<int>(epoch_->ranks.size());
      a.rank = static_cast<int>(std::find(epoch_->ranks.begin(), epoch_->ranks.end(),
                                          info.worker_id) - epoch_->ranks.begin());
      a.placement = epoch_->placement;
      return a;
    }
    epoch_->broken = true;
  }
  auto [it, fresh] = pending_.try_emplace(info.worker_id, Pending{info, now, now});
  it->second.info = info;
  it->second.info.communicator_address.clear();
  it->second.last_seen = now;
  MaybeForm(now);
  if (InEpoch(info.worker_id) && !epoch_->broken) {
    Assignment a;
    a.epoch = epoch_->number;
    a.world_size = static_cast<int>(epoch_->ranks.size());
    a.rank = static_cast<int>(std::find(epoch_->ranks.begin(), epoch_->ranks.end(),
                                        info.worker_id) - epoch_->ranks.begin());
    a.placement = epoch_->placement;
    return a;
  }
  return absl::UnavailableError(absl::StrCat("the EP group is forming (", pending_.size(), " of ",
                                             options_.expected_workers,
                                             " workers waiting); retry"));
}

void ClusterMap::MaybeForm(absl::Time now) {
  // Drop pending workers that stopped asking.
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second.last_seen > 3 * options_.heartbeat_interval) {
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  if (pending_.empty()) return;
  const bool healthy = epoch_ && !epoch_->broken;
  // Candidates: the pending workers, plus the live members of a healthy (smaller) epoch.
  std::vector<std::string> candidates;
  for (const auto& [id, p] : pending_) candidates.push_back(id);
  if (healthy) {
    for (const std::string& id : epoch_->ranks) {
      if (!members_[id].dead && !pending_.count(id)) candidates.push_back(id);
    }
  }
  absl::Time first = now;
  for (const auto& [id, p] : pending_) first = std::min(first, p.first_seen);
  const bool enough = static_cast<int>(candidates.size()) >= options_.expected_workers;
  if (!enough && now - first < options_.settle) return;
  if (healthy && static_cast<int>(epoch_->ranks.size()) >= options_.expected_workers) {
    return;  // a full healthy group: extra workers wait for a vacancy
  }
  std::sort(candidates.begin(), candidates.end());
  if (static_cast<int>(candidates.size()) > options_.expected_workers) {
    candidates.resize(static_cast<size_t>(options_.expected_workers));
  }
  absl::StatusOr<ExpertPlacement> placement =
      DefaultPlacement(options_, static_cast<int>(candidates.size()));
  if (!placement.ok()) return;
  std::map<std::string, Member> members;
  for (const std::string& id : candidates) {
    Member m;
    if (auto p = pending_.find(id); p != pending_.end()) {
      m.info = p->second.info;
      pending_.erase(p);
    } else {
      m = members_[id];
    }
    m.info.communicator_address.clear();  // every member publishes a fresh one
    m.last_seen = now;
    m.dead = false;
    members[id] = m;
  }
  Epoch epoch;
  epoch.number = next_epoch_++;
  epoch.ranks = candidates;
  epoch.placement = *std::move(placement);
  epoch.placement.version = epoch.number;
  epoch_ = std::move(epoch);
  members_ = std::move(members);
  budgets_.clear();
}

ClusterMap::HeartbeatReply ClusterMap::Heartbeat(const std::string& worker_id, uint64_t epoch,
                                                 const WorkerLoadInfo& load, absl::Time now) {
  absl::MutexLock lock(&mu_);
  HeartbeatReply reply;
  reply.epoch = epoch_ ? epoch_->number : 0;
  reply.placement_version = epoch_ ? epoch_->placement.version : 0;
  if (auto p = pending_.find(worker_id); p != pending_.end()) p->second.last_seen = now;
  if (!InEpoch(worker_id) || epoch_->number != epoch || epoch_->broken) return reply;
  Member& m = members_[worker_id];
  m.last_seen = now;
  m.load = load;
  reply.known = true;
  const int rank = static_cast<int>(std::find(epoch_->ranks.begin(), epoch_->ranks.end(),
                                              worker_id) - epoch_->ranks.begin());
  if (auto b = budgets_.find(rank); b != budgets_.end()) reply.budget = b->second;
  return reply;
}

absl::StatusOr<GroupView> ClusterMap::Group(uint64_t epoch) const {
  absl::MutexLock lock(&mu_);
  if (!epoch_ || (epoch != 0 && epoch != epoch_->number)) {
    return absl::NotFoundError(absl::StrCat("epoch ", epoch, " is not the current one (",
                                            epoch_ ? epoch_->number : 0, ")"));
  }
  GroupView view;
  view.epoch = epoch_->number;
  view.complete = Complete() && !epoch_->broken;
  for (size_t r = 0; r < epoch_->ranks.size(); ++r) {
    const Member& m = members_.at(epoch_->ranks[r]);
    view.members.push_back({static_cast<int>(r), m.info, !m.dead, m.load});
  }
  return view;
}

void ClusterMap::Tick(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (epoch_) {
    for (const std::string& id : epoch_->ranks) {
      Member& m = members_[id];
      // A member that published its address is expected to heartbeat; one that never did has
      // the settle time to do so.
      const absl::Duration allowed = m.info.communicator_address.empty()
                                         ? options_.settle + 3 * options_.heartbeat_interval
                                         : 3 * options_.heartbeat_interval;
      if (!m.dead && now - m.last_seen > allowed) {
        m.dead = true;
        epoch_->broken = true;
      }
    }
  }
  MaybeForm(now);
}

std::optional<GroupView> ClusterMap::ServingGroup() const {
  absl::StatusOr<GroupView> view = Group(0);
  if (!view.ok() || !view->complete) return std::nullopt;
  for (const GroupMemberView& m : view->members) {
    if (!m.alive) return std::nullopt;
  }
  return *std::move(view);
}

}  // namespace epinfer

namespace epinfer {

int ClusterMap::LiveWorkers() const {
  absl::MutexLock lock(&mu_);
  int live = static_cast<int>(pending_.size());
  if (epoch_) {
    for (const std::string& id : epoch_->ranks) {
      if (!members_.at(id).dead && !pending_.count(id)) ++live;
    }
  }
  return live;
}

}  // namespace epinfer

namespace epinfer {

absl::StatusOr<ExpertPlacement> ClusterMap::Placement() const {
  absl::MutexLock lock(&mu_);
  if (!epoch_) return absl::NotFoundError("no EP group yet");
  return epoch_->placement;
}

absl::StatusOr<uint64_t> ClusterMap::ProposePlacement(uint64_t base_version,
                                                      ExpertPlacement placement) {
  absl::MutexLock lock(&mu_);
  if (!epoch_ || epoch_->broken) {
    return absl::FailedPreconditionError("no serving EP group to place experts on");
  }
  if (base_version != epoch_->placement.version) {
    return absl::FailedPreconditionError(absl::StrCat("stale proposal: based on version ",
                                                      base_version, ", current is ",
                                                      epoch_->placement.version));
  }
  if (placement.layers.size() != epoch_->placement.layers.size()) {
    return absl::InvalidArgumentError("placement has the wrong number of layers");
  }
  for (size_t l = 0; l < placement.layers.size(); ++l) {
    const LayerPlacement& current = epoch_->placement.layers[l];
    LayerPlacement& next = placement.layers[l];
    if (current.phy2log.empty() != next.phy2log.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": MoE layers differ"));
    }
    if (current.phy2log.empty()) continue;
    if (next.num_ranks != current.num_ranks || next.slots_per_rank != current.slots_per_rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", l, ": ", next.num_ranks, " ranks × ", next.slots_per_rank,
          " slots; the group has ", current.num_ranks, " × ", current.slots_per_rank));
    }
    absl::Status status = next.Index(options_.num_logical_experts);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": ", status.message()));
    }
  }
  placement.version = epoch_->placement.version + 1;
  epoch_->placement = std::move(placement);
  return epoch_->placement.version;
}

absl::Status ClusterMap::SetBudgets(const std::map<int, BatchBudget>& budgets) {
  absl::MutexLock lock(&mu_);
  const int ranks = epoch_ ? static_cast<int>(epoch_->ranks.size()) : 0;
  for (const auto& [rank, b] : budgets) {
    if (rank < 0 || rank >= ranks) {
      return absl::InvalidArgumentError(absl::StrCat("budget for rank ", rank, " of ", ranks));
    }
    if (b.max_tokens_per_step < 1 || b.max_tokens_per_step > 65536 ||
        b.prefill_chunk_tokens < 1 || b.prefill_chunk_tokens > b.max_tokens_per_step) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rank ", rank, ": max_tokens_per_step must be 1..65536 and prefill_chunk_tokens "
          "1..max_tokens_per_step"));
    }
  }
  budgets_ = budgets;
  return absl::OkStatus();
}

std::map<int, ClusterMap::BatchBudget> ClusterMap::Budgets() const {
  absl::MutexLock lock(&mu_);
  return budgets_;
}

}  // namespace epinfer
