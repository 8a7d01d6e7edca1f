#ifndef EPINFER_SCHEDULER_LOAD_WINDOW_H_
#define EPINFER_SCHEDULER_LOAD_WINDOW_H_

#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "epinfer/v1/scheduler.pb.h"

namespace epinfer {

// What the balancer sees over the sliding window.
struct LoadSnapshot {
  uint64_t placement_version = 0;  // the newest version any rank reported
  int64_t reports = 0;
  // [layer] → tokens routed to each logical expert (all ranks, all placement versions: routing
  // does not depend on where experts live).
  std::map<uint32_t, std::vector<double>> expert_load;
  // [layer] → rows per step each rank's experts computed, under `placement_version` only. Per
  // step: ranks' reports in the window cover different step ranges (one may have sent three
  // since a switch, another one), and per-step rates compare them.
  std::map<uint32_t, std::map<uint32_t, double>> rank_load;
  // Ranks with a report under `placement_version` in the window: fewer than the group right
  // after a switch, when rank_load describes only part of it.
  int ranks_at_version = 0;
  // rank → tokens computed per second of compute (step time minus collective waits).
  std::map<uint32_t, double> rank_tokens_per_second;
  std::map<uint32_t, uint64_t> rank_placement_version;  // each rank's newest report
  double total_tokens = 0;
};

// max / mean over ranks of one layer's load; 1.0 when balanced (or no load).
double Imbalance(const std::map<uint32_t, double>& per_rank, int num_ranks);

// Over all layers, what a step waits for: Σ over layers of the most loaded rank's load / Σ of the
// mean load. Every layer waits for its own slowest rank, so loads summed over layers per rank
// would hide a layer whose hot rank differs from the next layer's.
double StepImbalance(const std::map<uint32_t, std::map<uint32_t, double>>& rank_load,
                     int num_ranks);

// Telemetry reports of every rank over the last `window`. Thread-safe.
class LoadWindow {
 public:
  explicit LoadWindow(absl::Duration window) : window_(window) {}

  void Add(const v1::TelemetryReport& report, absl::Time now);
  LoadSnapshot Snapshot(absl::Time now);
  // Drops reports older than `placement_version` (after a switch the old rank loads no longer
  // describe the group).
  void ForgetBefore(uint64_t placement_version);

 private:
  struct Entry {
    absl::Time time;
    v1::TelemetryReport report;
  };
  const absl::Duration window_;
  absl::Mutex mu_;
  std::deque<Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace epinfer

#endif  // EPINFER_SCHEDULER_LOAD_WINDOW_H_
