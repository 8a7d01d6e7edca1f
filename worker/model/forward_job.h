#ifndef EPINFER_WORKER_MODEL_FORWARD_JOB_H_
#define EPINFER_WORKER_MODEL_FORWARD_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/model/model.h"

namespace epinfer {

// A batch of sequences run through the model by an EP group: sequence s runs its attention on
// rank s % size (data parallel); the routed experts are sharded by the placement; every rank joins
// every step, also with no sequence of its own.
struct ForwardJob {
  std::string model_dir;
  std::vector<std::vector<int32_t>> sequences;
  // false: each sequence in one prefill step; true: one token per step through the KV cache.
  bool decode = false;
  ForwardOptions options;
  // {"num_ranks": N, "phy2log": [...]}; empty: contiguous over the group.
  std::string placement_json;
  int64_t kv_cache_bytes = 256 << 20;
};

// This rank's part of the job. On rank 0: the logits of every position of every sequence,
// f32 [sum of lengths, vocab], in sequence order (gathered from the ranks through the
// communicator); elsewhere an empty vector.
absl::StatusOr<std::vector<float>> RunForwardJob(const ForwardJob& job, Communicator& comm);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_FORWARD_JOB_H_
