#ifndef EPINFER_WORKER_COMM_RENDEZVOUS_H_
#define EPINFER_WORKER_COMM_RENDEZVOUS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace epinfer {

// Bootstrap of a communicator group: every rank publishes a blob (its UCX worker address, an NCCL
// unique id) and receives everyone's, in rank order.
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  virtual absl::StatusOr<std::vector<std::string>> Exchange(int rank, int size,
                                                            const std::string& mine,
                                                            absl::Time deadline) = 0;
};

// Through a directory every rank can read (a local path or a shared volume): rank r writes
// `<dir>/<key>.<r>` atomically and polls for the others' files until the deadline.
std::unique_ptr<Rendezvous> MakeFileRendezvous(std::string dir, std::string key);

}  // namespace epinfer

#endif  // EPINFER_WORKER_COMM_RENDEZVOUS_H_
