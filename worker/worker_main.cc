#include "worker/worker_main.h"

#include "common/server_flags.h"
#include "common/server_process.h"
#include "epinfer/v1/worker.grpc.pb.h"

namespace epinfer {

int RunWorker(int argc, char** argv) {
  ServerProcess process("worker", argc, argv, "[flags]", ServerFlagNames());
  absl::StatusOr<ServerAddresses> addresses = ResolveServerFlags(50061, 9401);
  process.CheckFlag(addresses.status());

  // Worker answers UNIMPLEMENTED until the serving issue implements it.
  v1::Worker::Service worker;
  process.CheckStartup(process.StartMetrics(addresses->metrics));
  process.CheckStartup(process.Serve("grpc", addresses->grpc, {&worker}).status());
  return process.Run(addresses->drain);
}

}  // namespace epinfer
