#include "common/grpc_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace epinfer {

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::vector<Listener>& listeners, const std::vector<grpc::Service*>& services,
    int max_message_bytes) {
  if (listeners.empty()) return absl::InvalidArgumentError("grpc server: no listen address");
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  auto result = std::make_unique<GrpcServer>(PrivateTag{});
  result->ports_.assign(listeners.size(), 0);
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
  // gRPC shares ports by default (SO_REUSEPORT): a second process on a taken port would bind
  // silently and receive half the traffic. A taken port must be a startup error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (size_t i = 0; i < listeners.size(); ++i) {
    builder.AddListeningPort(listeners[i].address,
                             listeners[i].credentials ? listeners[i].credentials
                                                      : grpc::InsecureServerCredentials(),
                             &result->ports_[i]);
  }
  for (grpc::Service* service : services) builder.RegisterService(service);
  result->server_ = builder.BuildAndStart();
  if (result->server_ == nullptr) {
    std::string addresses;
    for (const auto& l : listeners) absl::StrAppend(&addresses, addresses.empty() ? "" : ", ", l.address);
    return absl::UnavailableError(absl::StrCat("grpc server: cannot listen on ", addresses));
  }
  for (size_t i = 0; i < listeners.size(); ++i) {
    if (result->ports_[i] == 0) {
      return absl::UnavailableError(
          absl::StrCat("grpc server: cannot bind ", listeners[i].address));
    }
  }
  result->SetServing(true);
  return result;
}

void GrpcServer::SetServing(bool serving) {
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(serving);
}

void GrpcServer::SetServing(const std::string& service, bool serving) {
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(service, serving);
}

void GrpcServer::Shutdown(absl::Duration drain) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + drain));
  server_->Wait();
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace epinfer
