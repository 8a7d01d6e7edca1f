#include "bench/serving_report.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace epinfer {
namespace {

std::string Rate(double rate) { return std::isfinite(rate) ? absl::StrFormat("%g", rate) : "inf"; }

void Row(std::string& out, absl::string_view name, absl::string_view value) {
  absl::StrAppendFormat(&out, "%-40s %s\n", name, value);
}

void Row(std::string& out, absl::string_view name, double value) {
  Row(out, name, absl::StrFormat("%.2f", value));
}

void Section(std::string& out, absl::string_view title) {
  const int pad = std::max(0, 50 - static_cast<int>(title.size()) - 2);
  absl::StrAppend(&out, std::string(pad / 2, '-'), " ", title, " ", std::string(pad - pad / 2, '-'),
                  "\n");
}

void Latency(std::string& out, absl::string_view name, const LatencyStats& s) {
  Row(out, absl::StrCat("Mean ", name, " (ms):"), s.mean_ms);
  Row(out, absl::StrCat("P50 ", name, " (ms):"), s.p50_ms);
  Row(out, absl::StrCat("P90 ", name, " (ms):"), s.p90_ms);
  Row(out, absl::StrCat("P99 ", name, " (ms):"), s.p99_ms);
}

void Latency(nlohmann::json& j, const std::string& name, const LatencyStats& s) {
  j["mean_" + name + "_ms"] = s.mean_ms;
  j["p50_" + name + "_ms"] = s.p50_ms;
  j["p90_" + name + "_ms"] = s.p90_ms;
  j["p99_" + name + "_ms"] = s.p99_ms;
}

}  // namespace

std::string FormatReport(const BenchmarkDescription& run, const ServingSummary& summary) {
  const WorkloadOptions& w = run.workload;
  std::string out = "============= Serving Benchmark Result =============\n";
  Row(out, "Target:", run.target);
  Row(out, "Concurrency / request rate (req/s):",
      absl::StrCat(run.concurrency > 0 ? absl::StrCat(run.concurrency) : "unbounded", " / ",
                   Rate(run.request_rate)));
  Row(out, "Input / output length (tokens):",
      absl::StrFormat("%d / %d, range ratio %g, seed %d", w.input_len, w.output_len, w.range_ratio,
                      w.seed));
  Row(out, "Successful requests:", absl::StrCat(summary.completed));
  Row(out, "Failed requests:", absl::StrCat(summary.failed));
  Row(out, "Benchmark duration (s):", summary.duration_s);
  Row(out, "Total input tokens:", absl::StrCat(summary.input_tokens));
  Row(out, "Total generated tokens:", absl::StrCat(summary.output_tokens));
  Row(out, "Request throughput (req/s):", summary.request_throughput);
  Row(out, "Input token throughput (tok/s):", summary.input_throughput);
  Row(out, "Output token throughput (tok/s):", summary.output_throughput);
  Section(out, "Time to First Token");
  Latency(out, "TTFT", summary.ttft);
  Section(out, "Time per Output Token (excl. 1st token)");
  Latency(out, "TPOT", summary.tpot);
  Section(out, "Inter-token Latency");
  Latency(out, "ITL", summary.itl);
  Section(out, "End-to-end Latency");
  Latency(out, "E2EL", summary.e2e);
  absl::StrAppend(&out, std::string(52, '='), "\n");
  for (const std::string& error : summary.errors) absl::StrAppend(&out, "error: ", error, "\n");
  return out;
}

std::string ReportJson(const BenchmarkDescription& run, const ServingSummary& summary) {
  nlohmann::json j;
  j["target"] = run.target;
  j["mode"] = run.direct ? "direct" : "router";
  j["concurrency"] = run.concurrency;
  j["request_rate"] = std::isfinite(run.request_rate) ? nlohmann::json(run.request_rate)
                                                      : nlohmann::json("inf");
  j["num_requests"] = run.workload.num_requests;
  j["input_len"] = run.workload.input_len;
  j["output_len"] = run.workload.output_len;
  j["range_ratio"] = run.workload.range_ratio;
  j["seed"] = run.workload.seed;
  j["completed"] = summary.completed;
  j["failed"] = summary.failed;
  j["duration_s"] = summary.duration_s;
  j["total_input_tokens"] = summary.input_tokens;
  j["total_output_tokens"] = summary.output_tokens;
  j["request_throughput"] = summary.request_throughput;
  j["input_throughput"] = summary.input_throughput;
  j["output_throughput"] = summary.output_throughput;
  Latency(j, "ttft", summary.ttft);
  Latency(j, "tpot", summary.tpot);
  Latency(j, "itl", summary.itl);
  Latency(j, "e2el", summary.e2e);
  j["errors"] = summary.errors;
  return j.dump(2) + "\n";
}

}  // namespace epinfer
