#ifndef EPINFER_WORKER_FLAGS_H_
#define EPINFER_WORKER_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"

// Flags the worker and the model commands of the CLI share (one definition in the `epinfer`
// binary, which links both).
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(int64_t, kv_cache_mb);
ABSL_DECLARE_FLAG(std::string, transport);

#endif  // EPINFER_WORKER_FLAGS_H_
