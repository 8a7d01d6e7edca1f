#ifndef EPINFER_WORKER_TELEMETRY_H_
#define EPINFER_WORKER_TELEMETRY_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "epinfer/v1/scheduler.grpc.pb.h"
#include "worker/engine/engine.h"

namespace epinfer {

// Expert load and step timings of this rank, streamed to the scheduler once per window. Adding
// a step never blocks on the network; when the scheduler is down, windows are dropped and the
// stream is re-opened later (serving goes on).
class TelemetryReporter {
 public:
  TelemetryReporter(std::shared_ptr<grpc::Channel> scheduler, absl::Duration interval);
  ~TelemetryReporter();

  void SetGroup(int rank, uint64_t epoch, uint64_t placement_version);
  void AddStep(const StepReport& step);

 private:
  void Loop();
  v1::TelemetryReport TakeWindow();

  std::unique_ptr<v1::Scheduler::Stub> stub_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  v1::TelemetryReport window_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<uint64_t>> expert_tokens_ ABSL_GUARDED_BY(mu_);  // [layer][expert]
  std::vector<std::vector<uint64_t>> slot_rows_ ABSL_GUARDED_BY(mu_);      // [layer][slot]
  uint64_t step_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_TELEMETRY_H_
