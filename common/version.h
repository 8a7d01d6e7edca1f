#ifndef EPINFER_COMMON_VERSION_H_
#define EPINFER_COMMON_VERSION_H_

namespace epinfer {

// Semantic version of the epinfer release; the public API is epinfer.v1.
inline constexpr char kVersion[] = "0.1.0";

}  // namespace epinfer

#endif  // EPINFER_COMMON_VERSION_H_
