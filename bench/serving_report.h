#ifndef EPINFER_BENCH_SERVING_REPORT_H_
#define EPINFER_BENCH_SERVING_REPORT_H_

#include <string>

#include "bench/load_generator.h"
#include "bench/serving_stats.h"

namespace epinfer {

// What was run, for the report's header and the JSON file.
struct BenchmarkDescription {
  std::string target;  // GrpcCompletionTarget::description()
  bool direct = false;
  int64_t concurrency = 0;  // 0: unbounded
  double request_rate = 0;  // infinity: closed loop
  WorkloadOptions workload;
};

// The result as an aligned two-column table, in vLLM benchmark_serving's layout.
std::string FormatReport(const BenchmarkDescription& run, const ServingSummary& summary);

// One JSON object: the run's parameters and every number of the table (times in ms, throughputs
// per second), for scripts.
std::string ReportJson(const BenchmarkDescription& run, const ServingSummary& summary);

}  // namespace epinfer

#endif  // EPINFER_BENCH_SERVING_REPORT_H_
