#include "router/router_main.h"

#include "absl/flags/flag.h"
#include "common/server_flags.h"
#include "common/server_process.h"
#include "epinfer/v1/cluster.grpc.pb.h"
#include "epinfer/v1/completion.grpc.pb.h"

ABSL_FLAG(int, cluster_port, 50052,
          "Port of the internal epinfer.v1.Cluster service (workers register here), on "
          "--internal_bind. 0 picks a free port.");

namespace epinfer {

int RunRouter(int argc, char** argv) {
  ServerProcess process("router", argc, argv, "[flags]", ServerFlagNames({"cluster_port"}));
  absl::StatusOr<ServerAddresses> addresses = ResolveServerFlags(50051, 9400);
  process.CheckFlag(addresses.status());
  absl::StatusOr<std::string> cluster_address =
      ListenAddress(addresses->internal, absl::GetFlag(FLAGS_cluster_port), "cluster_port");
  process.CheckFlag(cluster_address.status());

  // Completions and Cluster answer UNIMPLEMENTED until the serving issue implements them.
  v1::Completions::Service completions;
  v1::Cluster::Service cluster;
  process.CheckStartup(process.StartMetrics(addresses->metrics));
  process.CheckStartup(process.Serve("grpc", addresses->grpc, {&completions}).status());
  process.CheckStartup(process.Serve("cluster", *cluster_address, {&cluster}).status());
  return process.Run(addresses->drain);
}

}  // namespace epinfer
