#include "common/server_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

ABSL_FLAG(std::string, bind, "0.0.0.0", "Interface the component's gRPC service listens on.");
ABSL_FLAG(int, port, -1,
          "gRPC port. 0 picks a free port (logged at startup); -1 is the component's default "
          "(router 50051, worker 50061, scheduler 50071).");
ABSL_FLAG(std::string, internal_bind, "",
          "Interface for internal services (the router's cluster service) and /metrics; empty "
          "means the same as --bind.");
ABSL_FLAG(int, metrics_port, -1,
          "Prometheus /metrics HTTP port. 0 picks a free port; -1 is the component's default "
          "(router 9400, worker 9401, scheduler 9402).");
ABSL_FLAG(int, drain_timeout_s, 10,
          "On SIGTERM, how long running requests may take to finish before they are cancelled.");

namespace epinfer {

std::vector<std::string> ServerFlagNames(std::vector<std::string> component_flags) {
  for (const char* name : {"bind", "port", "internal_bind", "metrics_port", "drain_timeout_s",
                           "log_level"}) {
    component_flags.emplace_back(name);
  }
  return component_flags;
}

absl::StatusOr<std::string> ListenAddress(const std::string& host, int port,
                                          const std::string& flag) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", port, " is not a port (0..65535)"));
  }
  if (host.empty()) return absl::InvalidArgumentError("listen host is empty (--bind)");
  // IPv6 literals need brackets in "host:port".
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

absl::StatusOr<ServerAddresses> ResolveServerFlags(int default_port, int default_metrics_port) {
  ServerAddresses addresses;
  const std::string bind = absl::GetFlag(FLAGS_bind);
  std::string internal = absl::GetFlag(FLAGS_internal_bind);
  if (internal.empty()) internal = bind;
  const int port = absl::GetFlag(FLAGS_port) == -1 ? default_port : absl::GetFlag(FLAGS_port);
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port) == -1
                               ? default_metrics_port
                               : absl::GetFlag(FLAGS_metrics_port);
  ASSIGN_OR_RETURN(addresses.grpc, ListenAddress(bind, port, "port"));
  ASSIGN_OR_RETURN(addresses.metrics, ListenAddress(internal, metrics_port, "metrics_port"));
  addresses.internal = internal;
  const int drain_s = absl::GetFlag(FLAGS_drain_timeout_s);
  if (drain_s < 0 || drain_s > 3600) {
    return absl::InvalidArgumentError(
        absl::StrCat("--drain_timeout_s=", drain_s, " must be in 0..3600"));
  }
  addresses.drain = absl::Seconds(drain_s);
  return addresses;
}

}  // namespace epinfer
