#include "worker/kernels/random_weight.h"

#include <cmath>
#include <cstring>
#include <random>

namespace epinfer {

RandomWeight MakeRandomWeight(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RandomWeight s;
  s.w.dtype = dtype;
  s.w.rows = rows;
  s.w.cols = cols;
  s.bytes.resize(static_cast<size_t>(rows * cols * DTypeSize(dtype)));
  s.dense.resize(static_cast<size_t>(rows * cols));
  const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
  if (dtype == DType::kF8E4M3) {
    s.scales.resize(static_cast<size_t>(sr * sc));
    for (float& v : s.scales) v = std::ldexp(1.0f, static_cast<int>(rng() % 5) - 8);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      const float v = normal(rng);
      switch (dtype) {
        case DType::kF32:
          std::memcpy(&s.bytes[i * 4], &v, 4);
          s.dense[i] = v;
          break;
        case DType::kBF16: {
          uint16_t b = F32ToBf16(v);
          std::memcpy(&s.bytes[i * 2], &b, 2);
          s.dense[i] = Bf16ToF32(b);
          break;
        }
        case DType::kF8E4M3: {
          // × 16 spreads the values over normals and subnormals of E4M3.
          uint8_t q = F32ToF8E4M3(v * 16);
          s.bytes[i] = q;
          s.dense[i] = static_cast<double>(F8E4M3ToF32(q)) * s.scales[(r / 128) * sc + c / 128];
          break;
        }
        default:
          break;
      }
    }
  }
  s.w.data = s.bytes.data();
  s.w.scale_inv = s.scales.empty() ? nullptr : s.scales.data();
  return s;
}

}  // namespace epinfer
