#include "scheduler/scheduler_service.h"

#include <algorithm>

namespace epinfer {

grpc::Status SchedulerService::ReportTelemetry(grpc::ServerContext*,
                                               grpc::ServerReader<v1::TelemetryReport>* reader,
                                               v1::TelemetryAck* ack) {
  v1::TelemetryReport report;
  uint64_t n = 0;
  while (reader->Read(&report)) {
    if (report.layers_size() > 4096 || report.slot_load_size() > 4096) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "report: more than 4096 layers");
    }
    window_.Add(report, absl::Now());
    ++n;
    reports_.fetch_add(1);
  }
  ack->set_reports(n);
  return grpc::Status::OK;
}

grpc::Status SchedulerService::GetLoad(grpc::ServerContext*, const v1::GetLoadRequest*,
                                       v1::GetLoadResponse* response) {
  const LoadSnapshot s = window_.Snapshot(absl::Now());
  response->set_window_reports(static_cast<uint64_t>(s.reports));
  response->set_placement_version(s.placement_version);
  response->set_ranks_reporting(static_cast<uint32_t>(s.ranks_at_version));
  int ranks = 0;
  for (const auto& [rank, version] : s.rank_placement_version) {
    ranks = std::max(ranks, static_cast<int>(rank) + 1);
  }
  for (const auto& [layer, per_rank] : s.rank_load) {
    v1::LayerImbalance* l = response->add_layers();
    l->set_layer(layer);
    l->set_imbalance(Imbalance(per_rank, ranks));
  }
  response->set_imbalance(StepImbalance(s.rank_load, ranks));
  return grpc::Status::OK;
}

}  // namespace epinfer
