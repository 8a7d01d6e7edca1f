#include "worker/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "", "Checkpoint directory (config.json + safetensors).");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = all cores.");
ABSL_FLAG(int64_t, kv_cache_mb, 256, "KV cache budget in MiB.");
ABSL_FLAG(std::string, transport, "",
          "How EP ranks exchange tokens: ucx (processes, the worker's default), nccl (processes, "
          "one per GPU; builds with CUDA) or local (ranks as threads of one process, the "
          "default of `epinfer forward --ep N`).");
ABSL_FLAG(std::string, router, "",
          "The router's cluster service (host:port): workers join the EP group through it (empty: "
          "a worker serves alone as a one-rank group); the scheduler reads the cluster state and "
          "proposes placements there.");
