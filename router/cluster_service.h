#ifndef EPINFER_ROUTER_CLUSTER_SERVICE_H_
#define EPINFER_ROUTER_CLUSTER_SERVICE_H_

#include <atomic>
#include <thread>

#include "epinfer/v1/cluster.grpc.pb.h"
#include "router/cluster_map.h"

namespace epinfer {

// epinfer.v1.Cluster over a ClusterMap, plus the thread that ticks it (dead workers, epochs).
class ClusterService final : public v1::Cluster::Service {
 public:
  explicit ClusterService(ClusterMap& map);
  ~ClusterService() override;

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status GetGroup(grpc::ServerContext* context, const v1::GetGroupRequest* request,
                        v1::GetGroupResponse* response) override;
  grpc::Status GetClusterState(grpc::ServerContext* context,
                               const v1::GetClusterStateRequest* request,
                               v1::ClusterState* response) override;
  grpc::Status ProposePlacement(grpc::ServerContext* context,
                                const v1::ProposePlacementRequest* request,
                                v1::ProposePlacementResponse* response) override;
  grpc::Status SetBatchBudgets(grpc::ServerContext* context,
                               const v1::SetBatchBudgetsRequest* request,
                               v1::SetBatchBudgetsResponse* response) override;

 private:
  ClusterMap& map_;
  std::atomic<bool> stop_{false};
  std::thread ticker_;
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_CLUSTER_SERVICE_H_
