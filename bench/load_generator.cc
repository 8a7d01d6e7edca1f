#include "bench/load_generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"

namespace epinfer {
namespace {

// Integers in [lo, hi] from the raw 64-bit stream, so a seed gives the same workload with any
// standard library (std::uniform_int_distribution is implementation-defined).
int64_t UniformInt(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

// Uniform in [0, 1) from the top 53 bits.
double UniformUnit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1p-53; }

// [len·(1−r), len·(1+r)] truncated to integers as benchmark_serving does (the epsilon keeps
// 100 · 1.2 from truncating to 119), at least 1.
std::pair<int64_t, int64_t> LengthRange(int64_t len, double range_ratio) {
  const double l = static_cast<double>(len);
  const int64_t lo = std::max<int64_t>(1, static_cast<int64_t>(l * (1 - range_ratio) + 1e-9));
  const int64_t hi = std::max<int64_t>(lo, static_cast<int64_t>(l * (1 + range_ratio) + 1e-9));
  return {lo, hi};
}

}  // namespace

absl::StatusOr<std::vector<BenchRequest>> MakeWorkload(const WorkloadOptions& options) {
  if (options.num_requests < 1) return absl::InvalidArgumentError("--num_requests must be >= 1");
  if (options.input_len < 1) return absl::InvalidArgumentError("--input_len must be >= 1");
  if (options.output_len < 1) return absl::InvalidArgumentError("--output_len must be >= 1");
  if (!(options.range_ratio >= 0 && options.range_ratio < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--range_ratio ", options.range_ratio, " is outside [0, 1)"));
  }
  if (options.vocab_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size ", options.vocab_size, " < 1"));
  }
  std::mt19937_64 rng(options.seed);
  const auto [in_lo, in_hi] = LengthRange(options.input_len, options.range_ratio);
  const auto [out_lo, out_hi] = LengthRange(options.output_len, options.range_ratio);
  std::vector<BenchRequest> requests(static_cast<size_t>(options.num_requests));
  for (BenchRequest& r : requests) {
    r.prompt.resize(static_cast<size_t>(UniformInt(rng, in_lo, in_hi)));
    r.output_tokens = UniformInt(rng, out_lo, out_hi);
    for (uint32_t& id : r.prompt) id = static_cast<uint32_t>(UniformInt(rng, 0, options.vocab_size - 1));
  }
  return requests;
}

std::vector<double> PoissonArrivals(int64_t n, double rate, uint64_t seed) {
  std::vector<double> at(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0);
  if (!std::isfinite(rate) || rate <= 0) return at;
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);  // not the workload's stream
  double t = 0;
  for (double& a : at) {
    a = t;
    t += -std::log1p(-UniformUnit(rng)) / rate;  // exponential gap, mean 1 / rate
  }
  return at;
}

LoadResult RunLoad(const std::vector<BenchRequest>& requests, const LoadOptions& options,
                   CompletionTarget& target) {
  using Clock = std::chrono::steady_clock;
  const int64_t n = static_cast<int64_t>(requests.size());
  LoadResult result;
  result.records.resize(requests.size());
  if (n == 0) return result;
  const std::vector<double> arrivals = PoissonArrivals(n, options.request_rate, options.seed);
  const int64_t limit = options.concurrency > 0 ? options.concurrency : LoadOptions::kMaxSenders;
  const int64_t senders = std::min({n, limit, LoadOptions::kMaxSenders});
  std::atomic<int64_t> next{0};
  const Clock::time_point start = Clock::now();
  auto send = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrivals[i])));
      result.records[i] = target.Send(requests[i], i, absl::Now() + options.request_timeout);
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(senders));
  for (int64_t s = 0; s < senders; ++s) threads.emplace_back(send);
  for (std::thread& t : threads) t.join();
  result.duration_s = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace epinfer
