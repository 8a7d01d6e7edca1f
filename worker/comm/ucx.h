#ifndef EPINFER_WORKER_COMM_UCX_H_
#define EPINFER_WORKER_COMM_UCX_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/comm/rendezvous.h"

namespace epinfer {

// Ranks as processes or hosts through UCX's UCP tag API, over whatever transports UCX finds
// (TCP, shared memory, CMA here; RDMA in production; UCX_TLS narrows the choice). Workers'
// addresses are exchanged through `rendezvous`; a peer that dies (connection error) or misses
// the deadline fails the collective on every surviving rank.
// Lets UCX use shared memory between ranks of one host despite peer failure detection. Call it
// early in main(), before any thread starts (it sets environment variables).
void PrepareUcxEnvironment();

// `lanes` > 1: that many UCP workers per rank, and messages of 256 KiB or more split over them,
// each lane driven by its own thread of the calling thread's OpenMP pool during the all-to-all,
// so that the copies UCX makes (both sides of shared memory) run on several cores. The group uses
// the smallest lane count any rank asked for.
inline constexpr int kMaxUcxLanes = 16;
absl::StatusOr<std::unique_ptr<Communicator>> MakeUcxCommunicator(int rank, int size,
                                                                  Rendezvous& rendezvous,
                                                                  absl::Time deadline,
                                                                  int lanes = 1);

}  // namespace epinfer

#endif  // EPINFER_WORKER_COMM_UCX_H_
