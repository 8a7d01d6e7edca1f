#ifndef EPINFER_WORKER_KERNELS_SIMD_H_
#define EPINFER_WORKER_KERNELS_SIMD_H_

namespace epinfer {

// The instruction sets the kernels choose between at run time, in increasing order. kAvx2 means
// AVX2 + FMA + F16C; kAvx512 means AVX-512 F/BW/VL (Skylake-X and later); kAvx512Vbmi adds the
// byte permutes of AVX-512 VBMI (Ice Lake and later), which decode FP8 by table lookup.
enum class Simd { kScalar, kAvx2, kAvx512, kAvx512Vbmi };

// The level in use: the best the CPU has, capped by EPINFER_SIMD=avx2|scalar in the environment
// (or avx512) or by SetSimdLevel.
Simd ActiveSimd();

// The SIMD level chosen at run time: "avx512vbmi", "avx512", "avx2" or "scalar".
const char* SimdLevel();
// Selects a SIMD level at or below what the CPU supports; false if it cannot (tests run every
// path on one machine).
bool SetSimdLevel(const char* level);

// Function attributes of the two vector paths, for kernels compiled for a baseline x86-64.
#define EPINFER_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define EPINFER_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define EPINFER_TARGET_AVX512VBMI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")))

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_SIMD_H_
