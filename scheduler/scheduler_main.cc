#include "scheduler/scheduler_main.h"

#include "common/server_flags.h"
#include "common/server_process.h"
#include "epinfer/v1/scheduler.grpc.pb.h"

namespace epinfer {

int RunScheduler(int argc, char** argv) {
  ServerProcess process("scheduler", argc, argv, "[flags]", ServerFlagNames());
  absl::StatusOr<ServerAddresses> addresses = ResolveServerFlags(50071, 9402);
  process.CheckFlag(addresses.status());

  // Scheduler answers UNIMPLEMENTED until the scheduler issue implements it.
  v1::Scheduler::Service scheduler;
  process.CheckStartup(process.StartMetrics(addresses->metrics));
  process.CheckStartup(process.Serve("grpc", addresses->grpc, {&scheduler}).status());
  return process.Run(addresses->drain);
}

}  // namespace epinfer
