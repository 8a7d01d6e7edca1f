#include "bench/serving_stats.h"

#include <algorithm>
#include <cmath>

namespace epinfer {

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(q, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (rank - static_cast<double>(below)) * (values[above] - values[below]);
}

LatencyStats SummarizeLatency(const std::vector<double>& seconds) {
  LatencyStats stats;
  stats.samples = static_cast<int64_t>(seconds.size());
  if (seconds.empty()) return stats;
  double sum = 0;
  for (double s : seconds) sum += s;
  stats.mean_ms = 1e3 * sum / static_cast<double>(seconds.size());
  stats.p50_ms = 1e3 * Percentile(seconds, 50);
  stats.p90_ms = 1e3 * Percentile(seconds, 90);
  stats.p99_ms = 1e3 * Percentile(seconds, 99);
  return stats;
}

ServingSummary Summarize(const std::vector<RequestRecord>& records, double duration_s) {
  ServingSummary summary;
  summary.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestRecord& r : records) {
    if (!r.status.ok()) {
      ++summary.failed;
      const std::string error = r.status.ToString();
      if (static_cast<int>(summary.errors.size()) < ServingSummary::kMaxErrors &&
          std::find(summary.errors.begin(), summary.errors.end(), error) == summary.errors.end()) {
        summary.errors.push_back(error);
      }
      continue;
    }
    ++summary.completed;
    summary.input_tokens += r.prompt_tokens;
    summary.output_tokens += r.output_tokens;
    e2e.push_back(r.latency_s);
    if (r.output_tokens > 0) ttft.push_back(r.ttft_s);
    if (r.output_tokens > 1) {
      tpot.push_back((r.latency_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1));
    }
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
  }
  if (duration_s > 0) {
    summary.request_throughput = static_cast<double>(summary.completed) / duration_s;
    summary.input_throughput = static_cast<double>(summary.input_tokens) / duration_s;
    summary.output_throughput = static_cast<double>(summary.output_tokens) / duration_s;
  }
  summary.ttft = SummarizeLatency(ttft);
  summary.tpot = SummarizeLatency(tpot);
  summary.itl = SummarizeLatency(itl);
  summary.e2e = SummarizeLatency(e2e);
  return summary;
}

}  // namespace epinfer
