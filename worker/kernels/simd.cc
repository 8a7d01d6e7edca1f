#include "worker/kernels/simd.h"

#include <cstdlib>
#include <cstring>

namespace epinfer {
namespace {

Simd DetectSimd() {
  __builtin_cpu_init();
  Simd best = Simd::kScalar;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    best = Simd::kAvx2;
  }
  if (best == Simd::kAvx2 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    best = Simd::kAvx512;
    if (__builtin_cpu_supports("avx512vbmi")) best = Simd::kAvx512Vbmi;
  }
  if (const char* cap = std::getenv("EPINFER_SIMD")) {
    if (std::strcmp(cap, "scalar") == 0) best = Simd::kScalar;
    if (std::strcmp(cap, "avx2") == 0 && best > Simd::kAvx2) best = Simd::kAvx2;
    if (std::strcmp(cap, "avx512") == 0 && best > Simd::kAvx512) best = Simd::kAvx512;
  }
  return best;
}

const Simd g_detected = DetectSimd();
Simd g_simd = g_detected;

}  // namespace

Simd ActiveSimd() { return g_simd; }

const char* SimdLevel() {
  switch (g_simd) {
    case Simd::kAvx512Vbmi:
      return "avx512vbmi";
    case Simd::kAvx512:
      return "avx512";
    case Simd::kAvx2:
      return "avx2";
    case Simd::kScalar:
      return "scalar";
  }
  return "?";
}

bool SetSimdLevel(const char* level) {
  Simd wanted;
  if (std::strcmp(level, "avx512vbmi") == 0) {
    wanted = Simd::kAvx512Vbmi;
  } else if (std::strcmp(level, "avx512") == 0) {
    wanted = Simd::kAvx512;
  } else if (std::strcmp(level, "avx2") == 0) {
    wanted = Simd::kAvx2;
  } else if (std::strcmp(level, "scalar") == 0) {
    wanted = Simd::kScalar;
  } else {
    return false;
  }
  if (static_cast<int>(wanted) > static_cast<int>(g_detected)) return false;
  g_simd = wanted;
  return true;
}

}  // namespace epinfer
