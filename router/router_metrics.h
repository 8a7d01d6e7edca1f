#ifndef EPINFER_ROUTER_ROUTER_METRICS_H_
#define EPINFER_ROUTER_ROUTER_METRICS_H_

#include <string>

#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace epinfer {

// The router's Prometheus families (listed in docs/METRICS.md).
class RouterMetrics {
 public:
  explicit RouterMetrics(prometheus::Registry& registry);

  void Request(const std::string& method, const std::string& code);
  void TimeToFirstToken(double seconds) { ttft_.Observe(seconds); }
  void InterTokenLatency(double seconds) { itl_.Observe(seconds); }
  void EndToEnd(double seconds) { e2e_.Observe(seconds); }
  void PromptTokens(int64_t n) { prompt_tokens_.Increment(static_cast<double>(n)); }
  void GenerationTokens(int64_t n) { generation_tokens_.Increment(static_cast<double>(n)); }
  void Routed(const std::string& policy, int rank);
  prometheus::Gauge& in_flight() { return in_flight_; }
  prometheus::Gauge& queued() { return queued_; }
  prometheus::Gauge& live_workers() { return live_workers_; }
  prometheus::Gauge& epoch() { return epoch_; }

 private:
  absl::Mutex mu_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& itl_;
  prometheus::Histogram& e2e_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Family<prometheus::Counter>& routed_;
  prometheus::Gauge& in_flight_;
  prometheus::Gauge& queued_;
  prometheus::Gauge& live_workers_;
  prometheus::Gauge& epoch_;
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_ROUTER_METRICS_H_
