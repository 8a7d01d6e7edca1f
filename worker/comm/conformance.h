#ifndef EPINFER_WORKER_COMM_CONFORMANCE_H_
#define EPINFER_WORKER_COMM_CONFORMANCE_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace epinfer {

// The behaviour every Communicator backend must show, run by every rank of a group at once:
// all-to-all-v with random sizes (zero included) and uneven counts, a 64 MiB message,
// all-gather and barrier, repeated `steps` times. Every byte received is checked against what
// its sender must have sent (a function of sender, receiver, step and seed). `on_step` runs
// before each step (tests use it to kill a rank mid-run).
struct ConformanceOptions {
  int steps = 20;
  uint64_t seed = 1;
  int64_t large_bytes = 64 << 20;  // one step sends this much from each rank to the next
  absl::Duration timeout = absl::Seconds(60);
  std::function<void(int step)> on_step;
};

absl::Status RunConformance(Communicator& comm, const ConformanceOptions& options);

}  // namespace epinfer

#endif  // EPINFER_WORKER_COMM_CONFORMANCE_H_
