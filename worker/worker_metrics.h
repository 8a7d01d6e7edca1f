#ifndef EPINFER_WORKER_WORKER_METRICS_H_
#define EPINFER_WORKER_WORKER_METRICS_H_

#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/engine/engine.h"

namespace epinfer {

// The worker's Prometheus families (listed in docs/METRICS.md).
class WorkerMetrics {
 public:
  explicit WorkerMetrics(prometheus::Registry& registry);

  void RecordStep(const StepReport& step);
  void RecordFinish(const std::string& reason);
  void SetEngine(const EngineStats& stats);
  void SetGroup(uint64_t epoch, int rank, int world_size, uint64_t placement_version);
  void GroupFailure() { group_failures_.Increment(); }
  void SetBudget(int64_t max_tokens_per_step) { budget_.Set(static_cast<double>(max_tokens_per_step)); }

 private:
  prometheus::Registry& registry_;
  prometheus::Histogram& step_seconds_;
  prometheus::Histogram& step_tokens_;
  prometheus::Counter& prefill_tokens_;
  prometheus::Counter& decode_tokens_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Gauge& kv_used_;
  prometheus::Gauge& kv_total_;
  prometheus::Gauge& epoch_;
  prometheus::Gauge& rank_;
  prometheus::Gauge& world_size_;
  prometheus::Gauge& placement_version_;
  prometheus::Counter& group_failures_;
  prometheus::Gauge& budget_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Histogram& dispatch_seconds_;
  prometheus::Histogram& combine_seconds_;
  prometheus::Family<prometheus::Counter>& bytes_sent_;
  prometheus::Family<prometheus::Counter>& bytes_received_;
  prometheus::Family<prometheus::Counter>& slot_tokens_;
  absl::Mutex mu_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_WORKER_METRICS_H_
