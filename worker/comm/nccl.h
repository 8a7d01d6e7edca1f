#ifndef EPINFER_WORKER_COMM_NCCL_H_
#define EPINFER_WORKER_COMM_NCCL_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/comm/rendezvous.h"

namespace epinfer {

// Ranks as GPUs through NCCL: ncclSend/ncclRecv between ncclGroupStart/End on device buffers
// (host buffers of this interface are staged through the device), bootstrapped with an
// ncclGetUniqueId from rank 0 shared through `rendezvous`. The communicator is non-blocking:
// every wait polls with the deadline and aborts the communicator (ncclCommAbort) when it passes
// or a peer fails.
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(int rank, int size, int device,
                                                                   Rendezvous& rendezvous,
                                                                   absl::Time deadline);

// Number of CUDA devices, or an error saying why there are none usable.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace epinfer

#endif  // EPINFER_WORKER_COMM_NCCL_H_
