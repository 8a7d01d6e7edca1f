#include "worker/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "", "Checkpoint directory (config.json + safetensors).");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = all cores.");
ABSL_FLAG(int64_t, kv_cache_mb, 256, "KV cache budget in MiB.");
ABSL_FLAG(std::string, transport, "",
          "How EP ranks exchange tokens: ucx (processes, the worker's default), nccl (processes, "
          "one per GPU; builds with CUDA) or local (ranks as threads of one process, the "
          "default of `epinfer forward --ep N`).");
ABSL_FLAG(int, comm_lanes, 1,
          "--transport=ucx: UCP workers per rank (1-16). Messages of 256 KiB or more are split "
          "over them, each driven by one of the --threads, so the copies of a large all-to-all "
          "run on several cores; the group uses the smallest count any rank asks for.");
ABSL_FLAG(std::string, router, "",
          "The router's cluster service (host:port): workers join the EP group through it (empty: "
          "a worker serves alone as a one-rank group); the scheduler reads the cluster state and "
          "proposes placements there.");
