#ifndef EPINFER_COMMON_SERVER_FLAGS_H_
#define EPINFER_COMMON_SERVER_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace epinfer {

// The listening flags every server component shares (--bind, --port, --internal_bind,
// --metrics_port, --drain_timeout_s). Defined once, so that the `epinfer` binary, which links
// every component, has one of each.
struct ServerAddresses {
  std::string grpc;      // "host:port" of the component's main gRPC service
  std::string internal;  // host for internal services, ":port" appended by the caller
  std::string metrics;   // "host:port" of /metrics
  absl::Duration drain;
};

// Resolves the flags; -1 ports take the component's defaults. INVALID_ARGUMENT names a flag
// out of range.
absl::StatusOr<ServerAddresses> ResolveServerFlags(int default_port, int default_metrics_port);

// The names of the shared server flags (and --log_level), for ServerProcess's allowed list.
std::vector<std::string> ServerFlagNames(std::vector<std::string> component_flags = {});

// "host:port" with the port validated (0..65535); the message names `flag`.
absl::StatusOr<std::string> ListenAddress(const std::string& host, int port,
                                          const std::string& flag);

}  // namespace epinfer

#endif  // EPINFER_COMMON_SERVER_FLAGS_H_
