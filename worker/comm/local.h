#ifndef EPINFER_WORKER_COMM_LOCAL_H_
#define EPINFER_WORKER_COMM_LOCAL_H_

#include <memory>
#include <vector>

#include "worker/comm/communicator.h"

namespace epinfer {

// N ranks as threads of one process (tests, single host). Each rank's Communicator must be used
// by one thread at a time; the ranks run their collectives concurrently, in the same order.
class LocalGroup {
 public:
  // One Communicator per rank, all sharing the group.
  static std::vector<std::unique_ptr<Communicator>> Create(int size);
};

// Marks `comm`'s rank as dead (what a crashed peer looks like): its pending and future calls fail,
// and every other rank's current and next collectives fail with UNAVAILABLE instead of waiting.
// `comm` must come from LocalGroup::Create.
void KillLocalRank(Communicator& comm);

}  // namespace epinfer

#endif  // EPINFER_WORKER_COMM_LOCAL_H_
