#ifndef EPINFER_WORKER_COMM_TRANSPORT_H_
#define EPINFER_WORKER_COMM_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/comm/rendezvous.h"

namespace epinfer {

// The backends whose ranks are processes, by their --transport name: "ucx" always, "nccl" in
// builds where CUDA was found (third_party/cuda_configure.bzl). Comma-separated, for messages.
std::string ProcessTransports();

// OK if `transport` names a backend of ProcessTransports(); else INVALID_ARGUMENT naming them
// (UNIMPLEMENTED for "nccl" in a build without CUDA).
absl::Status CheckProcessTransport(absl::string_view transport);

// One rank of a group of processes over `transport`. NCCL ranks take CUDA device
// rank % (devices on this host); NCCL allows one rank of a group per device. `lanes`: UCX
// workers per rank (see MakeUcxCommunicator); NCCL ignores it.
absl::StatusOr<std::unique_ptr<Communicator>> MakeProcessCommunicator(absl::string_view transport,
                                                                      int rank, int size,
                                                                      Rendezvous& rendezvous,
                                                                      absl::Time deadline,
                                                                      int lanes = 1);

}  // namespace epinfer

#endif  // EPINFER_WORKER_COMM_TRANSPORT_H_
