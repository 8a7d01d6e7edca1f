#include "scheduler/load_window.h"

#include <algorithm>

namespace epinfer {

double Imbalance(const std::map<uint32_t, double>& per_rank, int num_ranks) {
  if (num_ranks <= 0) return 1.0;
  double total = 0, max = 0;
  for (const auto& [rank, load] : per_rank) {
    total += load;
    max = std::max(max, load);
  }
  return total > 0 ? max / (total / num_ranks) : 1.0;
}

double StepImbalance(const std::map<uint32_t, std::map<uint32_t, double>>& rank_load,
                     int num_ranks) {
  if (num_ranks <= 0) return 1.0;
  double max_sum = 0, mean_sum = 0;
  for (const auto& [layer, per_rank] : rank_load) {
    double total = 0, max = 0;
    for (const auto& [rank, load] : per_rank) {
      total += load;
      max = std::max(max, load);
    }
    max_sum += max;
    mean_sum += total / num_ranks;
  }
  return mean_sum > 0 ? max_sum / mean_sum : 1.0;
}

void LoadWindow::Add(const v1::TelemetryReport& report, absl::Time now) {
  absl::MutexLock lock(&mu_);
  entries_.push_back({now, report});
  while (!entries_.empty() && now - entries_.front().time > window_) entries_.pop_front();
}

void LoadWindow::ForgetBefore(uint64_t placement_version) {
  absl::MutexLock lock(&mu_);
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const Entry& e) {
                                  return e.report.placement_version() < placement_version;
                                }),
                 entries_.end());
}

LoadSnapshot LoadWindow::Snapshot(absl::Time now) {
  absl::MutexLock lock(&mu_);
  while (!entries_.empty() && now - entries_.front().time > window_) entries_.pop_front();
  LoadSnapshot s;
  for (const Entry& e : entries_) {
    s.placement_version = std::max(s.placement_version, e.report.placement_version());
  }
  std::map<uint32_t, std::pair<double, double>> timing;  // rank → (tokens, compute seconds)
  std::map<uint32_t, double> steps_at_version;           // rank → steps its reports cover
  for (const Entry& e : entries_) {
    const v1::TelemetryReport& r = e.report;
    ++s.reports;
    s.rank_placement_version[r.rank()] = std::max(s.rank_placement_version[r.rank()], r.placement_version());
    for (const v1::LayerExpertLoad& layer : r.layers()) {
      std::vector<double>& load = s.expert_load[layer.layer()];
      if (load.size() < static_cast<size_t>(layer.tokens_per_expert_size())) {
        load.resize(static_cast<size_t>(layer.tokens_per_expert_size()), 0.0);
      }
      for (int i = 0; i < layer.tokens_per_expert_size(); ++i) {
        load[i] += static_cast<double>(layer.tokens_per_expert(i));
      }
    }
    if (r.placement_version() == s.placement_version) {
      steps_at_version[r.rank()] += static_cast<double>(r.end_step() - r.first_step());
      for (const v1::LayerSlotLoad& layer : r.slot_load()) {
        double rows = 0;
        for (uint64_t n : layer.tokens_per_slot()) rows += static_cast<double>(n);
        s.rank_load[layer.layer()][r.rank()] += rows;
      }
    }
    auto& [tokens, seconds] = timing[r.rank()];
    tokens += static_cast<double>(r.timing().tokens());
    seconds += std::max(0.0, r.timing().step_seconds_sum() - r.timing().collective_wait_seconds_sum());
    s.total_tokens += static_cast<double>(r.timing().tokens());
  }
  for (const auto& [rank, t] : timing) {
    if (t.second > 0 && t.first > 0) s.rank_tokens_per_second[rank] = t.first / t.second;
  }
  for (auto& [layer, per_rank] : s.rank_load) {
    for (auto& [rank, rows] : per_rank) rows /= std::max(1.0, steps_at_version[rank]);
  }
  s.ranks_at_version = static_cast<int>(steps_at_version.size());
  return s;
}

}  // namespace epinfer
