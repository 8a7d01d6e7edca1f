#ifndef EPINFER_BENCH_LOAD_GENERATOR_H_
#define EPINFER_BENCH_LOAD_GENERATOR_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/serving_stats.h"

namespace epinfer {

// One benchmark request: a prompt of token ids (so no tokenizer is needed) and how many tokens
// to generate (sent with ignore_eos, so the answer has exactly that length).
struct BenchRequest {
  std::vector<uint32_t> prompt;
  int64_t output_tokens = 0;
};

// vLLM benchmark_serving's random dataset: lengths uniform in [len·(1−r), len·(1+r)] (at least
// 1), token ids uniform in [0, vocab_size), all from one seeded generator.
struct WorkloadOptions {
  int64_t num_requests = 0;
  int64_t input_len = 0;
  int64_t output_len = 0;
  double range_ratio = 0;  // r in [0, 1)
  int64_t vocab_size = 0;
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the flag when an option is out of range.
absl::StatusOr<std::vector<BenchRequest>> MakeWorkload(const WorkloadOptions& options);

// Send offsets in seconds from the start of the run: a Poisson process of `rate` requests per
// second (exponential gaps), or all at 0 when rate is infinite.
std::vector<double> PoissonArrivals(int64_t n, double rate, uint64_t seed);

// Where requests go: a router's Completions.Generate or a worker's Worker.Submit
// (bench/completion_target.h), or a fake in tests.
class CompletionTarget {
 public:
  virtual ~CompletionTarget() = default;
  // Streams request `index` to its end, timing it; gives up at `deadline`.
  virtual RequestRecord Send(const BenchRequest& request, int64_t index, absl::Time deadline) = 0;
};

struct LoadOptions {
  // Most requests in flight at once; 0: no limit beyond kMaxSenders.
  int64_t concurrency = 0;
  // Requests per second (Poisson arrivals); infinite: every request is ready at the start and
  // only `concurrency` paces them (a closed loop).
  double request_rate = std::numeric_limits<double>::infinity();
  uint64_t seed = 0;
  absl::Duration request_timeout = absl::Minutes(5);
  static constexpr int64_t kMaxSenders = 1024;
};

struct LoadResult {
  std::vector<RequestRecord> records;  // in request order
  double duration_s = 0;               // first send → last request finished
};

// Sends every request once, each from a sender thread when its arrival time has come and a
// sender is free, and waits for all of them (each bounded by request_timeout).
LoadResult RunLoad(const std::vector<BenchRequest>& requests, const LoadOptions& options,
                   CompletionTarget& target);

}  // namespace epinfer

#endif  // EPINFER_BENCH_LOAD_GENERATOR_H_
