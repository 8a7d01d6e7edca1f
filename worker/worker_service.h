#ifndef EPINFER_WORKER_WORKER_SERVICE_H_
#define EPINFER_WORKER_WORKER_SERVICE_H_

#include <string>

#include "absl/synchronization/mutex.h"
#include "epinfer/v1/worker.grpc.pb.h"
#include "worker/engine/engine.h"
#include "worker/worker_metrics.h"

namespace epinfer {

// What Info reports besides the engine's numbers; updated by the group loop.
struct WorkerIdentity {
  std::string model;
  int64_t context_length = 0;
  int64_t vocab_size = 0;
  int64_t block_size_tokens = 0;
  int64_t bytes_per_token = 0;
  absl::Mutex mu;
  int rank ABSL_GUARDED_BY(mu) = 0;
  int world_size ABSL_GUARDED_BY(mu) = 0;
  uint64_t epoch ABSL_GUARDED_BY(mu) = 0;
  uint64_t placement_version ABSL_GUARDED_BY(mu) = 0;
  int64_t expert_slots ABSL_GUARDED_BY(mu) = 0;
  bool draining ABSL_GUARDED_BY(mu) = false;
};

// epinfer.v1.Worker over the rank's Engine: Submit streams a sequence's tokens as the engine
// produces them; the call's deadline and cancellation cancel the sequence.
class WorkerService final : public v1::Worker::Service {
 public:
  WorkerService(Engine& engine, WorkerIdentity& identity, WorkerMetrics* metrics);

  grpc::Status Submit(grpc::ServerContext* context, const v1::SubmitRequest* request,
                      grpc::ServerWriter<v1::SubmitEvent>* writer) override;
  grpc::Status Cancel(grpc::ServerContext* context, const v1::CancelRequest* request,
                      v1::CancelResponse* response) override;
  grpc::Status Drain(grpc::ServerContext* context, const v1::DrainRequest* request,
                     v1::DrainResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request,
                    v1::InfoResponse* response) override;

 private:
  Engine& engine_;
  WorkerIdentity& identity_;
  WorkerMetrics* metrics_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_WORKER_SERVICE_H_
