#ifndef EPINFER_BENCH_SERVING_STATS_H_
#define EPINFER_BENCH_SERVING_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace epinfer {

// What one benchmark request saw, timed by the client from the moment it sent the request.
struct RequestRecord {
  absl::Status status;
  int64_t prompt_tokens = 0;  // as the server reported them (usage), else as sent
  int64_t output_tokens = 0;  // token ids received
  double ttft_s = 0;          // send → first chunk that carries a token
  double latency_s = 0;       // send → end of the stream
  // Gaps between successive token-carrying chunks (one per chunk after the first, as vLLM's
  // benchmark_serving counts them); the worker sends one token per decode step.
  std::vector<double> itl_s;
};

// Mean and percentiles of one latency, in milliseconds.
struct LatencyStats {
  int64_t samples = 0;
  double mean_ms = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
};

// The whole run, in vLLM benchmark_serving's terms. Token counts and throughputs count only the
// requests that completed; failed ones are counted and their first errors kept.
struct ServingSummary {
  int64_t completed = 0;
  int64_t failed = 0;
  double duration_s = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double request_throughput = 0;  // completed requests / s
  double input_throughput = 0;    // prompt tokens / s
  double output_throughput = 0;   // generated tokens / s
  LatencyStats ttft;
  // Time per output token after the first: (latency - ttft) / (output_tokens - 1), per request
  // with at least 2 tokens.
  LatencyStats tpot;
  LatencyStats itl;  // over every gap of every completed request
  LatencyStats e2e;
  std::vector<std::string> errors;  // distinct error messages, at most kMaxErrors
  static constexpr int kMaxErrors = 5;
};

// The q-th percentile (0..100) of `values`, linearly interpolated between the two closest ranks
// (numpy.percentile's default, which benchmark_serving uses). 0 for no values.
double Percentile(std::vector<double> values, double q);

// Mean and p50/p90/p99 of values given in seconds, reported in milliseconds.
LatencyStats SummarizeLatency(const std::vector<double>& seconds);

// `duration_s`: wall time from the first request sent to the last one finished.
ServingSummary Summarize(const std::vector<RequestRecord>& records, double duration_s);

}  // namespace epinfer

#endif  // EPINFER_BENCH_SERVING_STATS_H_
