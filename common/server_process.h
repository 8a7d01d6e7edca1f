#ifndef EPINFER_COMMON_SERVER_PROCESS_H_
#define EPINFER_COMMON_SERVER_PROCESS_H_

#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "common/metrics.h"
#include "common/shutdown.h"

namespace epinfer {

// The lifecycle every epinfer server binary shares, so that main() stays thin:
//   ServerProcess process("router", argc, argv, "[flags]");   // flags (exit 2 on misuse), logging
//   process.StartMetrics(...); process.Serve(...);             // ports bound, health SERVING
//   return process.Run(drain, stop);                           // one "listening" log line, then
//                                                              // SIGINT/SIGTERM → drain → exit 0
class ServerProcess {
 public:
  // Parses flags (only `allowed_flags`; see ServerFlagNames()) and sets up logging; exits 2 on
  // a bad flag or a positional argument.
  ServerProcess(std::string component, int argc, char** argv, absl::string_view usage,
                std::vector<std::string> allowed_flags);

  // Exits 2 with the usage when `status` is not OK (flag values that parse but make no sense).
  void CheckFlag(const absl::Status& status) const;

  absl::Status StartMetrics(const std::string& address);
  MetricsServer& metrics() { return *metrics_; }

  // Serves `services` (plus health and reflection) on `address`; `name` labels it in the log line.
  absl::StatusOr<GrpcServer*> Serve(std::string name, const std::string& address,
                                    std::vector<grpc::Service*> services,
                                    std::shared_ptr<grpc::ServerCredentials> credentials = nullptr);

  // An endpoint served by something other than gRPC (the router's OpenAI HTTP port): named in
  // the "listening" line; on the signal, `shutdown(drain)` runs alongside the gRPC servers' drain.
  void AddEndpoint(std::string name, const std::string& address, int port,
                   std::function<void(absl::Duration)> shutdown);

  // Logs "<component> listening name=host:port ... metrics=host:port", then waits for SIGINT or
  // SIGTERM. On the signal: `before_drain` (stop admitting, finish work), then every server
  // drains for at most `drain`. Returns the exit code (0).
  int Run(absl::Duration drain, const std::function<void()>& before_drain = nullptr);

  // Exits 1 after logging `status` when it is not OK (startup failures: port taken, bad model).
  void CheckStartup(const absl::Status& status) const;

 private:
  std::string component_;
  std::string usage_;
  std::vector<std::string> allowed_flags_;
  ShutdownSignal signal_;
  std::unique_ptr<MetricsServer> metrics_;
  std::string metrics_host_;
  struct Endpoint {
    std::string name;
    std::string host;
    std::unique_ptr<GrpcServer> server;
  };
  std::vector<Endpoint> endpoints_;
  struct OtherEndpoint {
    std::string name;
    std::string host;
    int port;
    std::function<void(absl::Duration)> shutdown;
  };
  std::vector<OtherEndpoint> other_endpoints_;
};

// "host" of a "host:port" address ("[::1]:0" → "[::1]").
std::string HostOf(absl::string_view address);

}  // namespace epinfer

#endif  // EPINFER_COMMON_SERVER_PROCESS_H_
