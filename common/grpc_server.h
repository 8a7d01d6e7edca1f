#ifndef EPINFER_COMMON_GRPC_SERVER_H_
#define EPINFER_COMMON_GRPC_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace epinfer {

// One gRPC listening endpoint with grpc.health.v1 and server reflection, as every epinfer
// server has them.
class GrpcServer {
 public:
  struct Listener {
    // "host:port"; port 0 picks a free one.
    std::string address;
    std::shared_ptr<grpc::ServerCredentials> credentials;  // null: insecure
  };

  // Binds every listener and serves `services` on all of them. Health starts as SERVING.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const std::vector<Listener>& listeners, const std::vector<grpc::Service*>& services,
      int max_message_bytes = 64 << 20);

  // The ports actually bound, in the order of the listeners.
  const std::vector<int>& ports() const { return ports_; }

  // The overall health status (service name ""), and that of a named service.
  void SetServing(bool serving);
  void SetServing(const std::string& service, bool serving);

  // Marks NOT_SERVING, lets running calls finish until `drain` has passed, then cancels the
  // rest. Idempotent.
  void Shutdown(absl::Duration drain);

  grpc::Server& server() { return *server_; }

  ~GrpcServer();

 private:
  struct PrivateTag {};

 public:
  explicit GrpcServer(PrivateTag) {}

 private:
  std::unique_ptr<grpc::Server> server_;
  std::vector<int> ports_;
  bool shut_down_ = false;
};

}  // namespace epinfer

#endif  // EPINFER_COMMON_GRPC_SERVER_H_
