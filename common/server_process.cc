#include "common/server_process.h"

#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace epinfer {

std::string HostOf(absl::string_view address) {
  size_t colon = address.rfind(':');
  return std::string(colon == absl::string_view::npos ? address : address.substr(0, colon));
}

ServerProcess::ServerProcess(std::string component, int argc, char** argv, absl::string_view usage,
                             std::vector<std::string> allowed_flags)
    : component_(std::move(component)), usage_(usage), allowed_flags_(std::move(allowed_flags)) {
  std::vector<std::string> args = ParseFlagsOrExit(argc, argv, usage, allowed_flags_);
  if (!args.empty()) {
    ExitWithUsageError(component_, usage_, absl::StrCat("unexpected argument '", args[0], "'"),
                       allowed_flags_);
  }
  CheckFlag(InitLogging(component_));
}

void ServerProcess::CheckFlag(const absl::Status& status) const {
  if (!status.ok()) ExitWithUsageError(component_, usage_, status.message(), allowed_flags_);
}

void ServerProcess::CheckStartup(const absl::Status& status) const {
  if (status.ok()) return;
  spdlog::critical("{} cannot start: {}", component_, status.ToString());
  std::exit(1);
}

absl::Status ServerProcess::StartMetrics(const std::string& address) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics = MetricsServer::Start(address, component_);
  if (!metrics.ok()) return metrics.status();
  metrics_ = *std::move(metrics);
  metrics_host_ = HostOf(address);
  return absl::OkStatus();
}

absl::StatusOr<GrpcServer*> ServerProcess::Serve(
    std::string name, const std::string& address, std::vector<grpc::Service*> services,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start({{address, std::move(credentials)}}, services);
  if (!server.ok()) return server.status();
  endpoints_.push_back({std::move(name), HostOf(address), *std::move(server)});
  return endpoints_.back().server.get();
}

void ServerProcess::AddEndpoint(std::string name, const std::string& address, int port,
                                std::function<void(absl::Duration)> shutdown) {
  other_endpoints_.push_back({std::move(name), HostOf(address), port, std::move(shutdown)});
}

int ServerProcess::Run(absl::Duration drain, const std::function<void()>& before_drain) {
  std::string line = absl::StrCat(component_, " listening");
  for (const Endpoint& e : endpoints_) {
    absl::StrAppend(&line, " ", e.name, "=", e.host, ":", e.server->ports().front());
  }
  for (const OtherEndpoint& e : other_endpoints_) {
    absl::StrAppend(&line, " ", e.name, "=", e.host, ":", e.port);
  }
  if (metrics_ != nullptr) absl::StrAppend(&line, " metrics=", metrics_host_, ":", metrics_->port());
  spdlog::info("{}", line);

  int signal = 0;
  while (true) {
    if (std::optional<int> s = signal_.Wait(absl::Seconds(1))) {
      signal = *s;
      break;
    }
  }
  spdlog::info("{} received signal {}, draining (at most {})", component_, signal,
               absl::FormatDuration(drain));
  for (Endpoint& e : endpoints_) e.server->SetServing(false);
  if (before_drain) before_drain();
  std::vector<std::thread> others;  // drain alongside the gRPC servers, not after them
  for (OtherEndpoint& e : other_endpoints_) {
    others.emplace_back([&e, drain] { e.shutdown(drain); });
  }
  for (Endpoint& e : endpoints_) e.server->Shutdown(drain);
  for (std::thread& t : others) t.join();
  spdlog::info("{} stopped", component_);
  return 0;
}

}  // namespace epinfer
