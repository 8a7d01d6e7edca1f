#ifndef EPINFER_WORKER_FLAGS_H_
#define EPINFER_WORKER_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"

// Flags several components share (one definition in the `epinfer` binary, which links them
// all): the worker and the CLI's model commands; the worker and the scheduler (--router).
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(int64_t, kv_cache_mb);
ABSL_DECLARE_FLAG(std::string, transport);
ABSL_DECLARE_FLAG(int, comm_lanes);
ABSL_DECLARE_FLAG(std::string, router);

#endif  // EPINFER_WORKER_FLAGS_H_
