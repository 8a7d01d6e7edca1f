#include "worker/comm/transport.h"

#include "absl/strings/str_cat.h"
#include "worker/comm/ucx.h"
#ifdef EPINFER_WITH_NCCL
#include "worker/comm/nccl.h"
#endif

namespace epinfer {

std::string ProcessTransports() {
#ifdef EPINFER_WITH_NCCL
  return "ucx,nccl";
#else
  return "ucx";
#endif
}

absl::Status CheckProcessTransport(absl::string_view transport) {
  if (transport == "ucx") return absl::OkStatus();
  if (transport == "nccl") {
#ifdef EPINFER_WITH_NCCL
    return absl::OkStatus();
#else
    return absl::UnimplementedError(
        "--transport=nccl: this build has no CUDA (rebuild where /usr/local/cuda or CUDA_PATH "
        "holds CUDA with NCCL)");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--transport=", transport, ": expected one of ", ProcessTransports()));
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeProcessCommunicator(absl::string_view transport,
                                                                      int rank, int size,
                                                                      Rendezvous& rendezvous,
                                                                      absl::Time deadline,
                                                                      int lanes) {
  if (absl::Status status = CheckProcessTransport(transport); !status.ok()) return status;
  if (transport == "ucx") return MakeUcxCommunicator(rank, size, rendezvous, deadline, lanes);
#ifdef EPINFER_WITH_NCCL
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok()) return devices.status();
  if (*devices == 0) return absl::UnavailableError("--transport=nccl: no CUDA device");
  return MakeNcclCommunicator(rank, size, rank % *devices, rendezvous, deadline);
#else
  return absl::InternalError("unreachable");
#endif
}

}  // namespace epinfer
