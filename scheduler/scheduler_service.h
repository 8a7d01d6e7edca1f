#ifndef EPINFER_SCHEDULER_SCHEDULER_SERVICE_H_
#define EPINFER_SCHEDULER_SCHEDULER_SERVICE_H_

#include <atomic>

#include "epinfer/v1/scheduler.grpc.pb.h"
#include "scheduler/load_window.h"

namespace epinfer {

// epinfer.v1.Scheduler: workers stream telemetry windows into the LoadWindow; GetLoad reports
// the window's imbalance.
class SchedulerService final : public v1::Scheduler::Service {
 public:
  explicit SchedulerService(LoadWindow& window) : window_(window) {}

  grpc::Status ReportTelemetry(grpc::ServerContext* context,
                               grpc::ServerReader<v1::TelemetryReport>* reader,
                               v1::TelemetryAck* ack) override;
  grpc::Status GetLoad(grpc::ServerContext* context, const v1::GetLoadRequest* request,
                       v1::GetLoadResponse* response) override;

  uint64_t reports() const { return reports_.load(); }

 private:
  LoadWindow& window_;
  std::atomic<uint64_t> reports_{0};
};

}  // namespace epinfer

#endif  // EPINFER_SCHEDULER_SCHEDULER_SERVICE_H_
