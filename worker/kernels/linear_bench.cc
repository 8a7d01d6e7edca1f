// MatMul's FMA rate on the shapes the small preset multiplies, one thread, weights hot in cache
// or streamed: the kernel-level view behind engine_bench's decode and prefill numbers.
//   bazel run --config=bench //worker/kernels:linear_bench [-- --tokens=1,8,32,48]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "worker/kernels/linear.h"
#include "worker/kernels/random_weight.h"

ABSL_FLAG(std::string, tokens, "1,4,8,16,32,48,64", "Rows of x per product.");
ABSL_FLAG(std::string, dtypes, "BF16,F8_E4M3", "Weight dtypes (checkpoint names).");
ABSL_FLAG(int64_t, rows, 1024, "Weight rows (out features).");
ABSL_FLAG(int64_t, cols, 1024, "Weight cols (in features).");
ABSL_FLAG(int, threads, 1, "Kernel threads.");
ABSL_FLAG(double, seconds, 1.0, "Time per measurement.");
ABSL_FLAG(int, windows, 20, "Windows per measurement; the best counts.");
ABSL_FLAG(int, copies, 1,
          "Distinct copies of the weight, multiplied in turn: enough of them put the working set "
          "beyond the caches, as a model's decode step does, and show each product's fixed cost.");
ABSL_FLAG(bool, panels, true, "Pack the weight into panels (PackPanels), as the model loader does.");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using Clock = std::chrono::steady_clock;
  const int64_t rows = absl::GetFlag(FLAGS_rows), cols = absl::GetFlag(FLAGS_cols);
  if (rows < 1 || cols < 1 || absl::GetFlag(FLAGS_threads) < 0 ||
      !(absl::GetFlag(FLAGS_seconds) > 0) || absl::GetFlag(FLAGS_windows) < 1 ||
      absl::GetFlag(FLAGS_copies) < 1) {
    std::fprintf(stderr, "linear_bench: --rows, --cols, --windows, --copies >= 1, "
                         "--threads >= 0, --seconds > 0\n");
    return 2;
  }
  epinfer::SetKernelThreads(absl::GetFlag(FLAGS_threads));
  std::printf("| dtype | tokens | GFLOP/s | GB/s of weights |\n|---|---|---|---|\n");
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_dtypes), ',')) {
    epinfer::DType dtype;
    if (!epinfer::ParseDType(name, &dtype)) {
      std::fprintf(stderr, "unknown dtype %s\n", std::string(name).c_str());
      return 2;
    }
    epinfer::RandomWeight w = epinfer::MakeRandomWeight(dtype, rows, cols, 7);
    const int copies = absl::GetFlag(FLAGS_copies);
    std::vector<std::vector<uint8_t>> bytes(copies);
    epinfer::WeightArena packed;  // as the model loader packs: huge pages, copies back to back
    std::vector<epinfer::LinearWeight> weights(copies, w.w);
    for (int i = 0; i < copies; ++i) {
      bytes[i] = w.bytes;
      weights[i].data = bytes[i].data();
      if (absl::GetFlag(FLAGS_panels)) epinfer::PackPanels(&weights[i], &packed);
    }
    for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
      int64_t n = 0;
      if (!absl::SimpleAtoi(t, &n) || n <= 0) {
        std::fprintf(stderr, "linear_bench: --tokens: \"%s\" is not a count\n",
                     std::string(t).c_str());
        return 2;
      }
      std::vector<float> x(static_cast<size_t>(n * cols), 0.01f), y(static_cast<size_t>(n * rows));
      for (const epinfer::LinearWeight& weight : weights) {
        epinfer::MatMul(x.data(), n, weight, y.data());
      }
      // The best of short windows: this machine's cores are shared, and a busy neighbour only
      // ever slows a window down.
      double best = 0;
      const int windows = absl::GetFlag(FLAGS_windows);
      for (int window = 0; window < windows; ++window) {
        int64_t iterations = 0;
        const auto start = Clock::now();
        double elapsed = 0;
        while (elapsed < absl::GetFlag(FLAGS_seconds) / windows) {
          epinfer::MatMul(x.data(), n, weights[iterations % copies], y.data());
          ++iterations;
          elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        }
        best = std::max(best, iterations / elapsed);
      }
      const double flops = 2.0 * rows * cols * n * best;
      std::printf("| %s | %lld | %.1f | %.1f |\n", std::string(name).c_str(),
                  static_cast<long long>(n), flops / 1e9,
                  static_cast<double>(w.w.bytes()) * best / 1e9);
    }
  }
  return 0;
}
