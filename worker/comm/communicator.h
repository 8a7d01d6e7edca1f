#ifndef EPINFER_WORKER_COMM_COMMUNICATOR_H_
#define EPINFER_WORKER_COMM_COMMUNICATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace epinfer {

// The collectives an EP group runs, and nothing else. Every rank calls the same collectives in
// the same order; every call has a deadline, and a peer that does not arrive in time (or died)
// fails the call on every surviving rank with DEADLINE_EXCEEDED or UNAVAILABLE, never a hang.
// Backends: local (ranks as threads), ucx (processes/hosts), nccl (GPUs).
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "single", "local", "ucx", "nccl".
  virtual const char* backend() const = 0;

  // All-to-all-v of byte buffers: send[p] goes to rank p (any length, also 0); afterwards
  // (*recv)[p] holds what rank p sent to this rank. send.size() must equal size().
  virtual absl::Status AllToAllV(const std::vector<absl::Span<const uint8_t>>& send,
                                 std::vector<std::vector<uint8_t>>* recv, absl::Time deadline) = 0;

  // Every rank contributes `bytes` bytes; out receives size() × bytes, rank-major.
  virtual absl::Status AllGather(absl::Span<const uint8_t> mine, std::vector<uint8_t>* out,
                                 absl::Time deadline) = 0;

  virtual absl::Status Barrier(absl::Time deadline) = 0;
};

// The one-rank group: collectives are copies. What a single-process engine runs on.
std::unique_ptr<Communicator> MakeSingleRankCommunicator();

}  // namespace epinfer

#endif  // EPINFER_WORKER_COMM_COMMUNICATOR_H_
