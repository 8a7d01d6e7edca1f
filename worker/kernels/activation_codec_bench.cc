// ns per element of the activation codecs at every SIMD level the CPU has, single-threaded, on a
// prefill-sized dispatch: rows × hidden N(0, 1) activations (4096 × 7168 unless given),
//   activation_codec_bench [rows] [hidden]
// Each figure is the best of 5 passes over all rows (buffers larger than the caches, as in the
// dispatcher).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "worker/kernels/activation_codec.h"
#include "worker/kernels/simd.h"

namespace epinfer {
namespace {

double BestNsPerElement(int64_t elements, const std::function<void()>& pass) {
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    pass();
    const std::chrono::duration<double, std::nano> ns = std::chrono::steady_clock::now() - start;
    best = std::min(best, ns.count() / static_cast<double>(elements));
  }
  return best;
}

int Run(int64_t rows, int64_t hidden) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(rows * hidden)), y(x.size());
  for (float& v : x) v = normal(rng);
  const int64_t fp8_bytes = Fp8RowBytes(hidden);
  std::vector<uint8_t> fp8(static_cast<size_t>(rows * fp8_bytes));
  std::vector<uint8_t> bf16(static_cast<size_t>(rows * hidden * 2));
  const int64_t n = rows * hidden;
  std::printf("%lld x %lld, ns/element (best of 5)\n", static_cast<long long>(rows),
              static_cast<long long>(hidden));
  std::printf("%-11s %10s %10s %10s %14s\n", "level", "fp8 enc", "fp8 dec", "bf16 enc",
              "bf16 dec-add");
  const char* best = SimdLevel();
  for (const char* level : {"scalar", "avx2", "avx512", "avx512vbmi"}) {
    if (!SetSimdLevel(level)) continue;
    const double fp8_encode = BestNsPerElement(n, [&] {
      for (int64_t r = 0; r < rows; ++r) {
        EncodeFp8Row(x.data() + r * hidden, hidden, fp8.data() + r * fp8_bytes);
      }
    });
    const double fp8_decode = BestNsPerElement(n, [&] {
      for (int64_t r = 0; r < rows; ++r) {
        DecodeFp8Row(fp8.data() + r * fp8_bytes, hidden, y.data() + r * hidden);
      }
    });
    const double bf16_encode = BestNsPerElement(n, [&] {
      for (int64_t r = 0; r < rows; ++r) {
        EncodeBf16Row(x.data() + r * hidden, hidden, bf16.data() + r * hidden * 2);
      }
    });
    const double bf16_decode_add = BestNsPerElement(n, [&] {
      for (int64_t r = 0; r < rows; ++r) {
        DecodeAddBf16Row(bf16.data() + r * hidden * 2, hidden, y.data() + r * hidden);
      }
    });
    std::printf("%-11s %10.3f %10.3f %10.3f %14.3f\n", level, fp8_encode, fp8_decode, bf16_encode,
                bf16_decode_add);
  }
  SetSimdLevel(best);
  return 0;
}

}  // namespace
}  // namespace epinfer

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int64_t hidden = argc > 2 ? std::atoll(argv[2]) : 7168;
  if (rows < 1 || hidden < 1) {
    std::fprintf(stderr, "usage: activation_codec_bench [rows] [hidden]\n");
    return 2;
  }
  return epinfer::Run(rows, hidden);
}
