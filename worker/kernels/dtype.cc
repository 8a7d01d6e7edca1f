#include "worker/kernels/dtype.h"

namespace epinfer {

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
    case DType::kU8:
      return 1;
    case DType::kI64:
      return 8;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
  }
  return "?";
}

bool ParseDType(absl::string_view name, DType* dtype) {
  static constexpr DType kAll[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3,
                                   DType::kI32, DType::kI64, DType::kU8};
  for (DType d : kAll) {
    if (DTypeName(d) == name) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

uint8_t F32ToF8E4M3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  float a = std::fabs(f);
  if (std::isnan(f)) return 0x7f;
  if (a >= 448.0f) return sign | 0x7e;
  // Candidates are the 127 non-negative finite codes; the code order is the value order, so a
  // binary search over codes finds the neighbours.
  int lo = 0, hi = 0x7e;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (F8E4M3ToF32(static_cast<uint8_t>(mid)) <= a) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  int code = lo;
  if (code < 0x7e) {
    const float below = F8E4M3ToF32(static_cast<uint8_t>(code));
    const float above = F8E4M3ToF32(static_cast<uint8_t>(code + 1));
    const float d_below = a - below, d_above = above - a;
    if (d_above < d_below || (d_above == d_below && (code & 1))) ++code;
  }
  return sign | static_cast<uint8_t>(code);
}

}  // namespace epinfer
