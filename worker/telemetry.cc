#include "worker/telemetry.h"

#include <deque>

#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"

namespace epinfer {

TelemetryReporter::TelemetryReporter(std::shared_ptr<grpc::Channel> scheduler,
                                     absl::Duration interval)
    : stub_(v1::Scheduler::NewStub(std::move(scheduler))), interval_(interval) {
  thread_ = std::thread([this] { Loop(); });
}

TelemetryReporter::~TelemetryReporter() {
  stop_ = true;
  thread_.join();
}

void TelemetryReporter::SetGroup(int rank, uint64_t epoch, uint64_t placement_version) {
  absl::MutexLock lock(&mu_);
  if (window_.epoch() != epoch || window_.placement_version() != placement_version) {
    // Loads under another placement or group do not mix.
    expert_tokens_.clear();
    slot_rows_.clear();
    window_.mutable_timing()->Clear();
    window_.set_first_step(step_);
  }
  window_.set_rank(static_cast<uint32_t>(rank));
  window_.set_epoch(epoch);
  window_.set_placement_version(placement_version);
}

void TelemetryReporter::AddStep(const StepReport& step) {
  absl::MutexLock lock(&mu_);
  ++step_;
  if (step.global_tokens == 0) return;
  v1::StepTiming* t = window_.mutable_timing();
  t->set_steps(t->steps() + 1);
  t->set_tokens(t->tokens() + static_cast<uint64_t>(step.local_tokens));
  const double seconds = absl::ToDoubleSeconds(step.duration);
  double waits = 0;
  for (const MoeStats& m : step.forward.moe) waits += m.dispatch_seconds + m.combine_seconds;
  t->set_step_seconds_sum(t->step_seconds_sum() + seconds);
  t->set_collective_wait_seconds_sum(t->collective_wait_seconds_sum() + waits);
  t->set_step_seconds_max(std::max(t->step_seconds_max(), seconds));
  if (expert_tokens_.size() < step.forward.moe.size()) {
    expert_tokens_.resize(step.forward.moe.size());
    slot_rows_.resize(step.forward.moe.size());
  }
  for (size_t l = 0; l < step.forward.moe.size(); ++l) {
    const MoeStats& m = step.forward.moe[l];
    if (expert_tokens_[l].size() < m.tokens_per_logical_expert.size()) {
      expert_tokens_[l].resize(m.tokens_per_logical_expert.size());
    }
    for (size_t e = 0; e < m.tokens_per_logical_expert.size(); ++e) {
      expert_tokens_[l][e] += static_cast<uint64_t>(m.tokens_per_logical_expert[e]);
    }
    if (slot_rows_[l].size() < m.rows_per_local_slot.size()) {
      slot_rows_[l].resize(m.rows_per_local_slot.size());
    }
    for (size_t s = 0; s < m.rows_per_local_slot.size(); ++s) {
      slot_rows_[l][s] += static_cast<uint64_t>(m.rows_per_local_slot[s]);
    }
  }
}

v1::TelemetryReport TelemetryReporter::TakeWindow() {
  absl::MutexLock lock(&mu_);
  v1::TelemetryReport report = window_;
  report.set_end_step(step_);
  for (size_t l = 0; l < expert_tokens_.size(); ++l) {
    if (expert_tokens_[l].empty()) continue;
    v1::LayerExpertLoad* load = report.add_layers();
    load->set_layer(static_cast<uint32_t>(l));
    for (uint64_t n : expert_tokens_[l]) load->add_tokens_per_expert(n);
    v1::LayerSlotLoad* slots = report.add_slot_load();
    slots->set_layer(static_cast<uint32_t>(l));
    for (uint64_t n : slot_rows_[l]) slots->add_tokens_per_slot(n);
  }
  expert_tokens_.clear();
  slot_rows_.clear();
  window_.mutable_timing()->Clear();
  window_.set_first_step(step_);
  return report;
}

void TelemetryReporter::Loop() {
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientWriter<v1::TelemetryReport>> writer;
  v1::TelemetryAck ack;
  // Windows not yet delivered (the scheduler was down); the oldest are dropped beyond a bound.
  std::deque<v1::TelemetryReport> unsent;
  constexpr size_t kMaxUnsent = 120;
  while (!stop_.load()) {
    const absl::Time next = absl::Now() + interval_;
    while (!stop_.load() && absl::Now() < next) absl::SleepFor(absl::Milliseconds(20));
    v1::TelemetryReport report = TakeWindow();
    if (report.layers_size() > 0 || report.timing().steps() > 0) unsent.push_back(std::move(report));
    while (unsent.size() > kMaxUnsent) unsent.pop_front();
    while (!unsent.empty()) {
      if (writer == nullptr) {
        context = std::make_unique<grpc::ClientContext>();
        writer = stub_->ReportTelemetry(context.get(), &ack);
      }
      if (!writer->Write(unsent.front())) {
        // The scheduler is down or restarted: re-open the stream on the next window.
        writer.reset();
        context.reset();
        break;
      }
      unsent.pop_front();
    }
  }
  if (writer != nullptr) {
    writer->WritesDone();
    context->TryCancel();
    (void)writer->Finish();
  }
}

}  // namespace epinfer
