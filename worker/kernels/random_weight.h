#ifndef EPINFER_WORKER_KERNELS_RANDOM_WEIGHT_H_
#define EPINFER_WORKER_KERNELS_RANDOM_WEIGHT_H_

#include <cstdint>
#include <vector>

#include "worker/kernels/linear.h"

namespace epinfer {

// A random weight for kernel tests, with the exact values it encodes beside it.
struct RandomWeight {
  LinearWeight w;  // points into bytes / scales
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  std::vector<double> dense;  // [rows, cols]: the exact values W holds, for reference products
};

// Normal values in `dtype` (F32, BF16, or F8_E4M3 with power-of-two 128×128 block scales);
// `dense` is decoded with the scalar format conversions, which dtype_test holds to the format
// definitions.
RandomWeight MakeRandomWeight(DType dtype, int64_t rows, int64_t cols, uint32_t seed);

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_RANDOM_WEIGHT_H_
