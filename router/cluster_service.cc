#include "router/cluster_service.h"

#include "common/grpc_status.h"
#include "worker/model/placement_proto.h"

namespace epinfer {
namespace {

void MemberToProto(const GroupMemberView& m, v1::GroupMember* out) {
  out->set_rank(static_cast<uint32_t>(m.rank));
  out->set_worker_id(m.info.worker_id);
  out->set_host(m.info.host);
  out->set_worker_port(static_cast<uint32_t>(m.info.port));
  out->set_communicator_address(m.info.communicator_address);
  out->set_alive(m.alive);
}

}  // namespace

ClusterService::ClusterService(ClusterMap& map) : map_(map) {
  ticker_ = std::thread([this] {
    while (!stop_.load()) {
      map_.Tick(absl::Now());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
}

ClusterService::~ClusterService() {
  stop_ = true;
  ticker_.join();
}

grpc::Status ClusterService::Register(grpc::ServerContext*, const v1::RegisterRequest* request,
                                      v1::RegisterResponse* response) {
  WorkerInfo info;
  info.worker_id = request->worker_id();
  info.host = request->host();
  info.port = static_cast<int>(request->worker_port());
  info.metrics_port = static_cast<int>(request->metrics_port());
  info.communicator_address = request->communicator_address();
  const ClusterMap::Options& o = map_.options();
  if (request->has_model() && request->model().n_routed_experts() != 0 &&
      request->model().n_routed_experts() != static_cast<uint32_t>(o.num_logical_experts)) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "worker serves a model with " +
                            std::to_string(request->model().n_routed_experts()) +
                            " routed experts; the router's has " +
                            std::to_string(o.num_logical_experts));
  }
  absl::StatusOr<Assignment> a = map_.Register(info, absl::Now());
  if (!a.ok()) return ToGrpcStatus(a.status());
  response->set_rank(static_cast<uint32_t>(a->rank));
  response->set_world_size(static_cast<uint32_t>(a->world_size));
  response->set_epoch(a->epoch);
  response->set_heartbeat_interval_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(o.heartbeat_interval)));
  PlacementToProto(a->placement, o.num_logical_experts, response->mutable_placement());
  v1::ExpertShard* shard = response->mutable_shard();
  shard->set_rank(static_cast<uint32_t>(a->rank));
  shard->set_placement_version(a->placement.version);
  for (size_t l = 0; l < a->placement.layers.size(); ++l) {
    if (a->placement.layers[l].phy2log.empty()) continue;
    v1::LayerShard* layer = shard->add_layers();
    layer->set_layer(static_cast<uint32_t>(l));
    for (int32_t e : a->placement.LocalExperts(static_cast<int64_t>(l), a->rank)) {
      layer->add_logical_experts(static_cast<uint32_t>(e));
    }
  }
  return grpc::Status::OK;
}

grpc::Status ClusterService::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                                       v1::HeartbeatResponse* response) {
  WorkerLoadInfo load;
  load.running = request->load().running_sequences();
  load.waiting = request->load().waiting_sequences();
  load.kv_blocks_free = request->load().kv_blocks_free();
  load.kv_blocks_total = request->load().kv_blocks_total();
  load.outstanding_tokens = static_cast<int64_t>(request->load().outstanding_tokens());
  ClusterMap::HeartbeatReply reply =
      map_.Heartbeat(request->worker_id(), request->epoch(), load, absl::Now());
  response->set_known(reply.known);
  response->set_epoch(reply.epoch);
  response->set_placement_version(reply.placement_version);
  if (reply.budget.max_tokens_per_step > 0) {
    response->mutable_budget()->set_rank(request->rank());
    response->mutable_budget()->set_max_tokens_per_step(
        static_cast<uint32_t>(reply.budget.max_tokens_per_step));
    response->mutable_budget()->set_prefill_chunk_tokens(
        static_cast<uint32_t>(reply.budget.prefill_chunk_tokens));
  }
  return grpc::Status::OK;
}

grpc::Status ClusterService::GetGroup(grpc::ServerContext*, const v1::GetGroupRequest* request,
                                      v1::GetGroupResponse* response) {
  absl::StatusOr<GroupView> view = map_.Group(request->epoch());
  if (!view.ok()) return ToGrpcStatus(view.status());
  response->set_epoch(view->epoch);
  response->set_world_size(static_cast<uint32_t>(view->members.size()));
  response->set_complete(view->complete);
  for (const GroupMemberView& m : view->members) MemberToProto(m, response->add_members());
  return grpc::Status::OK;
}

grpc::Status ClusterService::GetClusterState(grpc::ServerContext*,
                                             const v1::GetClusterStateRequest*,
                                             v1::ClusterState* response) {
  absl::StatusOr<GroupView> view = map_.Group(0);
  if (!view.ok()) return grpc::Status::OK;  // no epoch yet: an empty state
  response->set_epoch(view->epoch);
  response->set_world_size(static_cast<uint32_t>(view->members.size()));
  for (const GroupMemberView& m : view->members) MemberToProto(m, response->add_members());
  const ClusterMap::Options& o = map_.options();
  if (absl::StatusOr<ExpertPlacement> placement = map_.Placement(); placement.ok()) {
    PlacementToProto(*placement, o.num_logical_experts, response->mutable_placement());
  }
  for (const auto& [rank, b] : map_.Budgets()) {
    v1::BatchBudget* budget = response->add_budgets();
    budget->set_rank(static_cast<uint32_t>(rank));
    budget->set_max_tokens_per_step(static_cast<uint32_t>(b.max_tokens_per_step));
    budget->set_prefill_chunk_tokens(static_cast<uint32_t>(b.prefill_chunk_tokens));
  }
  v1::ModelIdentity* model = response->mutable_model();
  model->set_num_hidden_layers(static_cast<uint32_t>(o.num_layers));
  model->set_n_routed_experts(static_cast<uint32_t>(o.num_logical_experts));
  for (int64_t l = 0; l < o.num_layers; ++l) {
    if (o.moe_layers[l]) {
      model->set_first_k_dense_replace(static_cast<uint32_t>(l));
      break;
    }
  }
  return grpc::Status::OK;
}

grpc::Status ClusterService::ProposePlacement(grpc::ServerContext*,
                                              const v1::ProposePlacementRequest* request,
                                              v1::ProposePlacementResponse* response) {
  const ClusterMap::Options& o = map_.options();
  absl::StatusOr<ExpertPlacement> placement = PlacementFromProto(
      request->placement(), o.num_layers, o.moe_layers, o.num_logical_experts);
  if (!placement.ok()) return ToGrpcStatus(placement.status());
  absl::StatusOr<uint64_t> version =
      map_.ProposePlacement(request->base_version(), *std::move(placement));
  if (!version.ok()) return ToGrpcStatus(version.status());
  response->set_version(*version);
  return grpc::Status::OK;
}

grpc::Status ClusterService::SetBatchBudgets(grpc::ServerContext*,
                                             const v1::SetBatchBudgetsRequest* request,
                                             v1::SetBatchBudgetsResponse*) {
  std::map<int, ClusterMap::BatchBudget> budgets;
  for (const v1::BatchBudget& b : request->budgets()) {
    budgets[static_cast<int>(b.rank())] = {static_cast<int64_t>(b.max_tokens_per_step()),
                                           static_cast<int64_t>(b.prefill_chunk_tokens())};
  }
  return ToGrpcStatus(map_.SetBudgets(budgets));
}

}  // namespace epinfer
