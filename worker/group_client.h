#ifndef EPINFER_WORKER_GROUP_CLIENT_H_
#define EPINFER_WORKER_GROUP_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "epinfer/v1/cluster.grpc.pb.h"
#include "worker/comm/rendezvous.h"
#include "worker/model/config.h"
#include "worker/model/placement.h"

namespace epinfer {

// A worker's side of the router's Cluster service: joining the EP group, the communicator
// bootstrap through it, heartbeats.
class GroupClient {
 public:
  struct Identity {
    std::string worker_id;
    std::string host;
    int port = 0;
    int metrics_port = 0;
    std::string transport = "ucx";
  };
  struct Membership {
    uint64_t epoch = 0;
    int rank = 0;
    int world_size = 0;
    ExpertPlacement placement;
    absl::Duration heartbeat_interval = absl::Milliseconds(500);
  };

  GroupClient(std::shared_ptr<grpc::Channel> router, Identity identity, const ModelConfig& config,
              std::string model_name);

  // Registers until the router has placed this worker in an epoch (it answers UNAVAILABLE while
  // the group forms), or the deadline passes.
  absl::StatusOr<Membership> Join(absl::Time deadline);

  // Rendezvous through the router for `membership`'s epoch: publishes this rank's communicator
  // address (Register again, now with the address) and polls GetGroup until every member has
  // published. ABORTED if the router has moved to another epoch meanwhile.
  std::unique_ptr<Rendezvous> RendezvousFor(const Membership& membership);

  struct Beat {
    bool known = false;
    uint64_t epoch = 0;
    uint64_t placement_version = 0;
    int64_t max_tokens_per_step = 0;  // 0: no budget set
    int64_t prefill_chunk_tokens = 0;
  };
  // The current placement of the group (after a heartbeat announced a newer version).
  absl::StatusOr<ExpertPlacement> CurrentPlacement();
  absl::StatusOr<Beat> Heartbeat(uint64_t epoch, const v1::WorkerLoad& load);

 private:
  friend class RouterRendezvous;
  absl::StatusOr<v1::RegisterResponse> RegisterOnce(const std::string& address,
                                                    absl::Time deadline);

  std::unique_ptr<v1::Cluster::Stub> stub_;
  Identity identity_;
  const ModelConfig config_;
  std::string model_name_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_GROUP_CLIENT_H_
