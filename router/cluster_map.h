#ifndef EPINFER_ROUTER_CLUSTER_MAP_H_
#define EPINFER_ROUTER_CLUSTER_MAP_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/model/placement.h"

namespace epinfer {

// What a worker tells the router about itself.
struct WorkerInfo {
  std::string worker_id;
  std::string host;
  int port = 0;
  int metrics_port = 0;
  std::string communicator_address;  // empty until the worker has created its communicator
};

struct WorkerLoadInfo {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_free = 0;
  int64_t kv_blocks_total = 0;
  int64_t outstanding_tokens = 0;
};

// A worker's place in an epoch of the EP group.
struct Assignment {
  uint64_t epoch = 0;
  int rank = 0;
  int world_size = 0;
  ExpertPlacement placement;
};

struct GroupMemberView {
  int rank = 0;
  WorkerInfo info;
  bool alive = true;
  WorkerLoadInfo load;
};

struct GroupView {
  uint64_t epoch = 0;
  std::vector<GroupMemberView> members;  // by rank
  bool complete = false;                 // every member has published its address
};

// The router's cluster map: membership, ranks and expert placement of the EP group, by epoch.
// Workers register (and re-register when told to); an epoch forms from the registered workers
// once `expected_workers` are there, or after `settle` with fewer (a worker is dead or not back
// yet); its ranks are the workers sorted by id, so a restarted worker gets its rank back. A
// member whose heartbeats stop for 3 intervals is dead: the epoch is broken, the survivors are
// told to re-register and a new epoch forms without it — and again with it once it is back.
// Thread-safe; time is passed in, so tests drive it.
class ClusterMap {
 public:
  struct Options {
    int expected_workers = 1;
    absl::Duration heartbeat_interval = absl::Milliseconds(500);
    absl::Duration settle = absl::Seconds(2);
    int64_t num_layers = 0;
    std::vector<bool> moe_layers;
    int32_t num_logical_experts = 0;
    // Extra expert slots per rank beyond ceil(experts / ranks): room for EPLB's replicas of hot
    // experts (DeepSeek serves with 32 redundant experts).
    int32_t redundant_slots_per_rank = 0;
  };
  explicit ClusterMap(Options options);

  // The worker's assignment in the newest epoch that includes it. While no such epoch exists:
  // UNAVAILABLE ("retry"): the worker is queued for the next one. INVALID_ARGUMENT for a bad
  // WorkerInfo.
  absl::StatusOr<Assignment> Register(const WorkerInfo& info, absl::Time now);

  struct BatchBudget {
    int64_t max_tokens_per_step = 0;  // 0: the worker's own setting
    int64_t prefill_chunk_tokens = 0;
  };
  struct HeartbeatReply {
    bool known = false;  // false: re-register (the epoch changed or the worker is not a member)
    uint64_t epoch = 0;
    uint64_t placement_version = 0;
    BatchBudget budget;
  };
  HeartbeatReply Heartbeat(const std::string& worker_id, uint64_t epoch,
                           const WorkerLoadInfo& load, absl::Time now);

  // The members of `epoch` (the newest if 0); NOT_FOUND for an epoch that is not the newest.
  absl::StatusOr<GroupView> Group(uint64_t epoch) const;

  // The current epoch's placement (version increases with every change).
  absl::StatusOr<ExpertPlacement> Placement() const;
  // A new placement for the current epoch (EPLB): same ranks and slots per rank, every expert
  // placed. FAILED_PRECONDITION when `base_version` is not the current version (stale) or no
  // group is serving; INVALID_ARGUMENT for a malformed placement. Returns the new version.
  absl::StatusOr<uint64_t> ProposePlacement(uint64_t base_version, ExpertPlacement placement);
  // Per-rank step budgets (cross-node batch scaling), by rank of the current epoch.
  absl::Status SetBudgets(const std::map<int, BatchBudget>& budgets);
  std::map<int, BatchBudget> Budgets() const;

  // Marks silent workers dead and forms epochs; call periodically.
  void Tick(absl::Time now);

  // The group requests go to: the newest epoch when it is complete and every member is alive.
  std::optional<GroupView> ServingGroup() const;
  // Workers that are alive: members of the newest epoch not marked dead, and those waiting to
  // join. Zero means nothing can serve (health NOT_SERVING).
  int LiveWorkers() const;
  const Options& options() const { return options_; }

  // A placement of the logical experts over `ranks` ranks: contiguous, with replicas of the
  // first experts filling the remaining slots (uneven division, redundant slots).
  static absl::StatusOr<ExpertPlacement> DefaultPlacement(const Options& options, int ranks);

 private:
  struct Member {
    WorkerInfo info;
    absl::Time last_seen;
    WorkerLoadInfo load;
    bool dead = false;
  };
  struct Epoch {
    uint64_t number = 0;
    std::vector<std::string> ranks;  // worker ids in rank order
    ExpertPlacement placement;
    bool broken = false;
  };
  struct Pending {
    WorkerInfo info;
    absl::Time first_seen;
    absl::Time last_seen;
  };

  void MaybeForm(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool InEpoch(const std::string& worker_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Complete() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::optional<Epoch> epoch_ ABSL_GUARDED_BY(mu_);
  uint64_t next_epoch_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, Member> members_ ABSL_GUARDED_BY(mu_);  // of the newest epoch
  std::map<std::string, Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::map<int, BatchBudget> budgets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_CLUSTER_MAP_H_
