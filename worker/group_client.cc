#include "worker/group_client.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grpcpp/grpcpp.h"
#include "common/status_macros.h"
#include "worker/model/placement_proto.h"

namespace epinfer {

class RouterRendezvous : public Rendezvous {
 public:
  RouterRendezvous(GroupClient& client, GroupClient::Membership membership)
      : client_(client), membership_(std::move(membership)) {}

  absl::StatusOr<std::vector<std::string>> Exchange(int rank, int size, const std::string& mine,
                                                    absl::Time deadline) override {
    ASSIGN_OR_RETURN(v1::RegisterResponse response, client_.RegisterOnce(mine, deadline));
    if (response.epoch() != membership_.epoch || static_cast<int>(response.rank()) != rank ||
        static_cast<int>(response.world_size()) != size) {
      return absl::AbortedError(absl::StrCat("the router moved to epoch ", response.epoch(),
                                             " while epoch ", membership_.epoch, " formed"));
    }
    while (true) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + absl::Seconds(5))));
      v1::GetGroupRequest request;
      request.set_epoch(membership_.epoch);
      v1::GetGroupResponse group;
      grpc::Status status = client_.stub_->GetGroup(&context, request, &group);
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
        return absl::AbortedError(status.error_message());
      }
      if (status.ok() && group.complete()) {
        std::vector<std::string> addresses(static_cast<size_t>(size));
        for (const v1::GroupMember& m : group.members()) {
          if (m.rank() < static_cast<uint32_t>(size)) addresses[m.rank()] = m.communicator_address();
        }
        return addresses;
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat("epoch ", membership_.epoch,
                                                        ": the group did not complete in time"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

 private:
  GroupClient& client_;
  GroupClient::Membership membership_;
};

GroupClient::GroupClient(std::shared_ptr<grpc::Channel> router, Identity identity,
                         const ModelConfig& config, std::string model_name)
    : stub_(v1::Cluster::NewStub(std::move(router))), identity_(std::move(identity)),
      config_(config), model_name_(std::move(model_name)) {}

absl::StatusOr<v1::RegisterResponse> GroupClient::RegisterOnce(const std::string& address,
                                                               absl::Time deadline) {
  v1::RegisterRequest request;
  request.set_worker_id(identity_.worker_id);
  request.set_host(identity_.host);
  request.set_worker_port(static_cast<uint32_t>(identity_.port));
  request.set_metrics_port(static_cast<uint32_t>(identity_.metrics_port));
  request.set_communicator_address(address);
  request.set_transport(identity_.transport);
  v1::ModelIdentity* model = request.mutable_model();
  model->set_name(model_name_);
  model->set_num_hidden_layers(static_cast<uint32_t>(config_.num_hidden_layers));
  model->set_first_k_dense_replace(static_cast<uint32_t>(config_.first_k_dense_replace));
  model->set_n_routed_experts(static_cast<uint32_t>(config_.n_routed_experts));
  model->set_vocab_size(static_cast<uint32_t>(config_.vocab_size));
  model->set_context_length(static_cast<uint32_t>(config_.max_position_embeddings));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + absl::Seconds(5))));
  v1::RegisterResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->Register(&context, request, &response)));
  return response;
}

absl::StatusOr<GroupClient::Membership> GroupClient::Join(absl::Time deadline) {
  while (true) {
    absl::StatusOr<v1::RegisterResponse> response = RegisterOnce("", deadline);
    if (response.ok()) {
      Membership m;
      m.epoch = response->epoch();
      m.rank = static_cast<int>(response->rank());
      m.world_size = static_cast<int>(response->world_size());
      m.heartbeat_interval = absl::Milliseconds(std::max<uint32_t>(50, response->heartbeat_interval_ms()));
      std::vector<bool> moe(static_cast<size_t>(config_.num_hidden_layers));
      for (int64_t l = 0; l < config_.num_hidden_layers; ++l) moe[l] = config_.is_moe_layer(l);
      ASSIGN_OR_RETURN(m.placement,
                       PlacementFromProto(response->placement(), config_.num_hidden_layers, moe,
                                          static_cast<int32_t>(config_.n_routed_experts)));
      return m;
    }
    // UNAVAILABLE: the group is forming, or the router is not up yet; anything else is final.
    if (response.status().code() != absl::StatusCode::kUnavailable &&
        response.status().code() != absl::StatusCode::kDeadlineExceeded) {
      return response.status();
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("joining the EP group: ",
                                                      response.status().message()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::unique_ptr<Rendezvous> GroupClient::RendezvousFor(const Membership& membership) {
  return std::make_unique<RouterRendezvous>(*this, membership);
}

absl::StatusOr<GroupClient::Beat> GroupClient::Heartbeat(uint64_t epoch, const v1::WorkerLoad& load) {
  v1::HeartbeatRequest request;
  request.set_worker_id(identity_.worker_id);
  request.set_epoch(epoch);
  *request.mutable_load() = load;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  v1::HeartbeatResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->Heartbeat(&context, request, &response)));
  Beat beat{response.known(), response.epoch(), response.placement_version(), 0, 0};
  if (response.has_budget()) {
    beat.max_tokens_per_step = response.budget().max_tokens_per_step();
    beat.prefill_chunk_tokens = response.budget().prefill_chunk_tokens();
  }
  return beat;
}

absl::StatusOr<ExpertPlacement> GroupClient::CurrentPlacement() {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::ClusterState state;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->GetClusterState(&context, {}, &state)));
  std::vector<bool> moe(static_cast<size_t>(config_.num_hidden_layers));
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) moe[l] = config_.is_moe_layer(l);
  return PlacementFromProto(state.placement(), config_.num_hidden_layers, moe,
                            static_cast<int32_t>(config_.n_routed_experts));
}

}  // namespace epinfer
