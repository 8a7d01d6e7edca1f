#ifndef EPINFER_COMMON_METRICS_H_
#define EPINFER_COMMON_METRICS_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace epinfer {

// Serves Prometheus text exposition on http://<bind>/metrics. Every component runs one; it
// carries the process metrics (CPU, memory, fds, start time) and epinfer_build_info, and each
// component registers its own families on registry().
class MetricsServer {
 public:
  // bind_address is "host:port"; port 0 picks a free port (read it back with port()).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(absl::string_view bind_address,
                                                              absl::string_view component);

  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }
  int port() const { return port_; }

 private:
  struct PrivateTag {};

 public:
  explicit MetricsServer(PrivateTag) {}

 private:

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_collector_;
  int port_ = 0;
};

// Standard latency buckets in seconds, 100 µs to 60 s.
const std::vector<double>& LatencyBucketsSeconds();

}  // namespace epinfer

#endif  // EPINFER_COMMON_METRICS_H_
