#include "cli/bench_command.h"

#include <cmath>
#include <fstream>
#include <iostream>
#include <limits>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bench/completion_target.h"
#include "bench/load_generator.h"
#include "bench/serving_report.h"
#include "bench/serving_stats.h"
#include "common/flags.h"

ABSL_FLAG(int64_t, concurrency, 0,
          "bench: most requests in flight; 0: no limit (Poisson arrivals only, at most 1024).");
ABSL_FLAG(double, request_rate, std::numeric_limits<double>::infinity(),
          "bench: requests per second, Poisson arrivals; inf: all at once, paced by --concurrency.");
ABSL_FLAG(int64_t, num_requests, 100, "bench: requests to send.");
ABSL_FLAG(int64_t, input_len, 128, "bench: prompt tokens per request (random token ids).");
ABSL_FLAG(int64_t, output_len, 128, "bench: tokens to generate per request (ignore_eos).");
ABSL_FLAG(double, range_ratio, 0.0,
          "bench: lengths uniform in [len*(1-r), len*(1+r)], r in [0, 1).");
ABSL_FLAG(bool, direct, false,
          "bench: --target is a worker's epinfer.v1.Worker port: Submit straight to it, no router.");
ABSL_FLAG(std::string, json, "", "bench: also write the result as JSON to this file.");
ABSL_FLAG(int64_t, warmup_requests, 1,
          "bench: untimed requests (input 16, output 4 tokens) sent first, one at a time.");

// Shared with `complete` and `generate`.
ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(int, timeout_s);
ABSL_DECLARE_FLAG(std::string, api_key);

namespace epinfer {
namespace {

constexpr char kUsage[] =
    "serve --target HOST:PORT [--direct] (--concurrency N | --request_rate R) "
    "[--num_requests N] [--input_len N] [--output_len N] [--range_ratio R] [--seed S] "
    "[--json FILE]";

absl::Status BenchServe() {
  if (absl::GetFlag(FLAGS_concurrency) < 0) {
    return absl::InvalidArgumentError("--concurrency must be >= 0");
  }
  const double rate = absl::GetFlag(FLAGS_request_rate);
  if (!(rate > 0)) return absl::InvalidArgumentError("--request_rate must be > 0 (or inf)");
  if (absl::GetFlag(FLAGS_concurrency) == 0 && std::isinf(rate)) {
    return absl::InvalidArgumentError("give --concurrency N or a finite --request_rate R");
  }
  if (absl::GetFlag(FLAGS_timeout_s) < 1) return absl::InvalidArgumentError("--timeout_s must be >= 1");
  const absl::Duration timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));

  TargetOptions target_options;
  target_options.address = absl::GetFlag(FLAGS_target);
  target_options.direct = absl::GetFlag(FLAGS_direct);
  target_options.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  target_options.seed = absl::GetFlag(FLAGS_seed);
  target_options.api_key = absl::GetFlag(FLAGS_api_key);
  absl::StatusOr<std::unique_ptr<GrpcCompletionTarget>> target =
      GrpcCompletionTarget::Connect(target_options, absl::Now() + absl::Seconds(10));
  if (!target.ok()) return target.status();

  WorkloadOptions workload;
  workload.num_requests = absl::GetFlag(FLAGS_num_requests);
  workload.input_len = absl::GetFlag(FLAGS_input_len);
  workload.output_len = absl::GetFlag(FLAGS_output_len);
  workload.range_ratio = absl::GetFlag(FLAGS_range_ratio);
  workload.vocab_size = (*target)->vocab_size();
  workload.seed = absl::GetFlag(FLAGS_seed);
  absl::StatusOr<std::vector<BenchRequest>> requests = MakeWorkload(workload);
  if (!requests.ok()) return requests.status();

  // Warm-up: checks the target end to end and opens the connection before the clock starts.
  WorkloadOptions warm = workload;
  warm.num_requests = std::max<int64_t>(1, absl::GetFlag(FLAGS_warmup_requests));
  warm.input_len = 16;
  warm.output_len = 4;
  warm.range_ratio = 0;
  warm.seed = workload.seed + 1;
  if (absl::GetFlag(FLAGS_warmup_requests) > 0) {
    absl::StatusOr<std::vector<BenchRequest>> warmup = MakeWorkload(warm);
    if (!warmup.ok()) return warmup.status();
    for (size_t i = 0; i < warmup->size(); ++i) {
      RequestRecord r = (*target)->Send((*warmup)[i], -1 - static_cast<int64_t>(i), absl::Now() + timeout);
      if (!r.status.ok()) {
        return absl::Status(r.status.code(), absl::StrCat("warm-up request to ", (*target)->description(),
                                                          ": ", r.status.message()));
      }
    }
  }

  LoadOptions load;
  load.concurrency = absl::GetFlag(FLAGS_concurrency);
  load.request_rate = rate;
  load.seed = workload.seed;
  load.request_timeout = timeout;
  std::cerr << "bench: " << workload.num_requests << " requests to " << (*target)->description()
            << std::endl;
  const LoadResult result = RunLoad(*requests, load, **target);
  const ServingSummary summary = Summarize(result.records, result.duration_s);

  BenchmarkDescription run{(*target)->description(), target_options.direct, load.concurrency,
                           rate, workload};
  std::cout << FormatReport(run, summary);
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path);
    out << ReportJson(run, summary);
    out.close();
    if (!out) return absl::PermissionDeniedError(absl::StrCat("--json: cannot write ", path));
  }
  if (summary.completed == 0) {
    return absl::UnavailableError(absl::StrCat("all ", summary.failed, " requests failed"));
  }
  return absl::OkStatus();
}

}  // namespace

int RunBench(int argc, char** argv) {
  const std::vector<std::string> flags = {
      "target", "direct", "concurrency", "request_rate", "num_requests", "input_len", "output_len",
      "range_ratio", "seed", "temperature", "timeout_s", "api_key", "json", "warmup_requests"};
  std::vector<std::string> args = ParseFlagsOrExit(argc, argv, kUsage, flags);
  if (args.empty() || args[0] != "serve") {
    ExitWithUsageError("bench", kUsage,
                       args.empty() ? "missing mode (serve)" : "unknown mode '" + args[0] + "'",
                       flags);
  }
  if (args.size() > 1) ExitWithUsageError("bench", kUsage, "unexpected argument " + args[1], flags);
  absl::Status status = BenchServe();
  if (status.ok()) return 0;
  std::cerr << "bench serve: " << status.ToString() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace epinfer
