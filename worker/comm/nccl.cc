#include "worker/comm/nccl.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <initializer_list>
#include <thread>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace epinfer {
namespace {

// cudart and NCCL, loaded with dlopen the first time a communicator or CudaDeviceCount needs
// them: a binary linked against them carries their 4 KiB-aligned thread-local storage into every
// thread, and the router (the same `epinfer` binary) crashed in its metrics server's threads.
// Loading at run time also lets one build run on machines with and without CUDA.
//
// The functions the backend calls, by library (cudaMalloc apart: it has C++ template overloads,
// so it is declared with its C signature).
#define EPINFER_CUDART_FUNCTIONS(X)                                                           \
  X(cudaGetDeviceCount) X(cudaGetErrorString) X(cudaSetDevice) X(cudaStreamCreateWithFlags) \
  X(cudaStreamDestroy) X(cudaStreamQuery) X(cudaFree) X(cudaMemcpyAsync)
#define EPINFER_NCCL_FUNCTIONS(X)                                                             \
  X(ncclGetErrorString) X(ncclGetUniqueId) X(ncclCommInitRankConfig) X(ncclCommGetAsyncError) \
  X(ncclCommFinalize) X(ncclCommDestroy) X(ncclCommAbort) X(ncclGroupStart) X(ncclGroupEnd)   \
  X(ncclSend) X(ncclRecv)

struct CudaApi {
  absl::Status status;  // why the libraries could not be loaded
#define EPINFER_DECLARE(name) decltype(&::name) name = nullptr;
  EPINFER_CUDART_FUNCTIONS(EPINFER_DECLARE)
  EPINFER_NCCL_FUNCTIONS(EPINFER_DECLARE)
#undef EPINFER_DECLARE
  cudaError_t (*cudaMalloc)(void**, size_t) = nullptr;
};

// The first of `names` that dlopen finds (LD_LIBRARY_PATH, the binary's run path, the system's).
void* OpenFirst(std::initializer_list<const char*> names, std::string* tried) {
  for (const char* name : names) {
    if (void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL)) return handle;
    absl::StrAppend(tried, tried->empty() ? "" : "; ", dlerror());
  }
  return nullptr;
}

const CudaApi& Cuda() {
  static absl::once_flag once;
  static CudaApi api;
  absl::call_once(once, [] {
    std::string tried;
    void* cudart = OpenFirst({"libcudart.so.13", "libcudart.so.12", "libcudart.so"}, &tried);
    void* nccl = OpenFirst({"libnccl.so.2", "libnccl.so"}, &tried);
    if (cudart == nullptr || nccl == nullptr) {
      api.status = absl::UnavailableError(absl::StrCat("CUDA/NCCL libraries not found: ", tried));
      return;
    }
    std::string missing;
    auto bind = [&missing](void* handle, const char* name, auto& fn) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name));
      if (fn == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
    };
#define EPINFER_BIND_CUDART(name) bind(cudart, #name, api.name);
#define EPINFER_BIND_NCCL(name) bind(nccl, #name, api.name);
    EPINFER_CUDART_FUNCTIONS(EPINFER_BIND_CUDART)
    EPINFER_NCCL_FUNCTIONS(EPINFER_BIND_NCCL)
#undef EPINFER_BIND_CUDART
#undef EPINFER_BIND_NCCL
    bind(cudart, "cudaMalloc", api.cudaMalloc);
    if (!missing.empty()) {
      api.status =
          absl::UnavailableError(absl::StrCat("CUDA/NCCL libraries lack ", missing, " (too old?)"));
    }
  });
  return api;
}

// The call as the error names it: its source text without the "Cuda()." of the table.
absl::string_view CallName(absl::string_view call) {
  absl::ConsumePrefix(&call, "Cuda().");
  return call;
}

// The one place CUDA and NCCL return codes become absl::Status, with the call named.
absl::Status CudaStatus(cudaError_t error, const char* call) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(CallName(call), ": ", Cuda().cudaGetErrorString(error)));
}

absl::Status NcclStatus(ncclResult_t result, const char* call) {
  if (result == ncclSuccess || result == ncclInProgress) return absl::OkStatus();
  const std::string message = absl::StrCat(CallName(call), ": ", Cuda().ncclGetErrorString(result));
  return result == ncclRemoteError || result == ncclSystemError ? absl::UnavailableError(message)
                                                                : absl::InternalError(message);
}

#define RETURN_IF_CUDA(call) \
  if (absl::Status s_ = CudaStatus((call), #call); !s_.ok()) return s_
#define RETURN_IF_NCCL(call) \
  if (absl::Status s_ = NcclStatus((call), #call); !s_.ok()) return s_
#define RETURN_IF_ERROR_(expr) \
  if (absl::Status s_ = (expr); !s_.ok()) return s_

// A device allocation that grows as needed.
class DeviceBuffer {
 public:
  ~DeviceBuffer() {
    if (data_ != nullptr) Cuda().cudaFree(data_);
  }
  absl::Status Reserve(size_t bytes) {
    if (bytes <= capacity_) return absl::OkStatus();
    if (data_ != nullptr) Cuda().cudaFree(data_);
    data_ = nullptr;
    capacity_ = 0;
    RETURN_IF_CUDA(Cuda().cudaMalloc(&data_, bytes));
    capacity_ = bytes;
    return absl::OkStatus();
  }
  uint8_t* data() { return static_cast<uint8_t*>(data_); }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(int rank, int size, int device) : rank_(rank), size_(size), device_(device) {}

  // A healthy communicator is finalised (its operations flushed) within a deadline; a broken
  // one, or one that does not finalise in time, is aborted.
  ~NcclCommunicator() override {
    if (comm_ != nullptr) {
      const bool finalised = broken_.ok() &&
                             NcclStatus(Cuda().ncclCommFinalize(comm_), "ncclCommFinalize").ok() &&
                             WaitComm(absl::Now() + absl::Seconds(10), "ncclCommFinalize").ok();
      if (finalised) {
        Cuda().ncclCommDestroy(comm_);
      } else {
        Cuda().ncclCommAbort(comm_);
      }
    }
    if (stream_ != nullptr) Cuda().cudaStreamDestroy(stream_);
  }

  absl::Status Init(Rendezvous& rendezvous, absl::Time deadline) {
    RETURN_IF_CUDA(Cuda().cudaSetDevice(device_));
    RETURN_IF_CUDA(Cuda().cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ncclUniqueId id{};
    if (rank_ == 0) RETURN_IF_NCCL(Cuda().ncclGetUniqueId(&id));
    std::string mine = rank_ == 0 ? std::string(id.internal, sizeof id.internal) : std::string();
    absl::StatusOr<std::vector<std::string>> blobs =
        rendezvous.Exchange(rank_, size_, mine, deadline);
    if (!blobs.ok()) return blobs.status();
    if ((*blobs)[0].size() != sizeof id.internal) {
      return absl::InvalidArgumentError("nccl rendezvous: rank 0 published no unique id");
    }
    std::memcpy(id.internal, (*blobs)[0].data(), sizeof id.internal);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // so that every wait can honour a deadline
    RETURN_IF_NCCL(Cuda().ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
    absl::Status status = WaitComm(deadline, "ncclCommInitRankConfig");
    // A communicator whose initialisation failed or timed out (a peer never came) can only be
    // aborted: finalising it would wait for the missing peer.
    if (!status.ok()) broken_ = status;
    return status;
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }

  absl::Status AllToAllV(const std::vector<absl::Span<const uint8_t>>& send,
                         std::vector<std::vector<uint8_t>>* recv, absl::Time deadline) override {
    if (send.size() != static_cast<size_t>(size_)) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllToAllV: ", send.size(), " send buffers for a group of ", size_));
    }
    if (!broken_.ok()) return broken_;
    absl::Status status = Exchange(send, recv, deadline);
    if (!status.ok()) broken_ = status;
    return status;
  }

  absl::Status AllGather(absl::Span<const uint8_t> mine, std::vector<uint8_t>* out,
                         absl::Time deadline) override {
    std::vector<absl::Span<const uint8_t>> send(static_cast<size_t>(size_), mine);
    std::vector<std::vector<uint8_t>> parts;
    absl::Status status = AllToAllV(send, &parts, deadline);
    if (!status.ok()) return status;
    out->clear();
    for (int r = 0; r < size_; ++r) {
      if (parts[r].size() != mine.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "AllGather: rank ", r, " sent ", parts[r].size(), " bytes, this rank ", mine.size()));
      }
      out->insert(out->end(), parts[r].begin(), parts[r].end());
    }
    return absl::OkStatus();
  }

  absl::Status Barrier(absl::Time deadline) override {
    std::vector<uint8_t> unused;
    return AllGather({}, &unused, deadline);
  }

 private:
  // Counts first (one int64 each way per peer), then the bytes, both as grouped send/recv.
  absl::Status Exchange(const std::vector<absl::Span<const uint8_t>>& send,
                        std::vector<std::vector<uint8_t>>* recv, absl::Time deadline) {
    RETURN_IF_CUDA(Cuda().cudaSetDevice(device_));
    std::vector<int64_t> send_counts(size_), recv_counts(size_);
    std::vector<size_t> send_offsets(size_ + 1, 0);
    for (int r = 0; r < size_; ++r) {
      send_counts[r] = static_cast<int64_t>(send[r].size());
      send_offsets[r + 1] = send_offsets[r] + send[r].size();
    }
    RETURN_IF_ERROR_(counts_.Reserve(2 * size_ * sizeof(int64_t)));
    int64_t* d_send_counts = reinterpret_cast<int64_t*>(counts_.data());
    int64_t* d_recv_counts = d_send_counts + size_;
    RETURN_IF_CUDA(Cuda().cudaMemcpyAsync(d_send_counts, send_counts.data(),
                                          size_ * sizeof(int64_t), cudaMemcpyHostToDevice,
                                          stream_));
    RETURN_IF_NCCL(Cuda().ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      RETURN_IF_NCCL(Cuda().ncclSend(d_send_counts + r, 1, ncclInt64, r, comm_, stream_));
      RETURN_IF_NCCL(Cuda().ncclRecv(d_recv_counts + r, 1, ncclInt64, r, comm_, stream_));
    }
    RETURN_IF_NCCL(Cuda().ncclGroupEnd());
    RETURN_IF_ERROR_(WaitComm(deadline, "ncclGroupEnd (counts)"));
    RETURN_IF_CUDA(Cuda().cudaMemcpyAsync(recv_counts.data(), d_recv_counts,
                                          size_ * sizeof(int64_t), cudaMemcpyDeviceToHost,
                                          stream_));
    RETURN_IF_ERROR_(WaitStream(deadline, "counts"));

    std::vector<size_t> recv_offsets(size_ + 1, 0);
    for (int r = 0; r < size_; ++r) {
      if (recv_counts[r] < 0) return absl::DataLossError("nccl: negative count from a peer");
      recv_offsets[r + 1] = recv_offsets[r] + static_cast<size_t>(recv_counts[r]);
    }
    RETURN_IF_ERROR_(send_buffer_.Reserve(std::max<size_t>(send_offsets[size_], 1)));
    RETURN_IF_ERROR_(recv_buffer_.Reserve(std::max<size_t>(recv_offsets[size_], 1)));
    for (int r = 0; r < size_; ++r) {
      if (send[r].empty()) continue;
      RETURN_IF_CUDA(Cuda().cudaMemcpyAsync(send_buffer_.data() + send_offsets[r], send[r].data(),
                                            send[r].size(), cudaMemcpyHostToDevice, stream_));
    }
    RETURN_IF_NCCL(Cuda().ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      if (send_counts[r] > 0) {
        RETURN_IF_NCCL(Cuda().ncclSend(send_buffer_.data() + send_offsets[r], send_counts[r],
                                       ncclUint8, r, comm_, stream_));
      }
      if (recv_counts[r] > 0) {
        RETURN_IF_NCCL(Cuda().ncclRecv(recv_buffer_.data() + recv_offsets[r], recv_counts[r],
                                       ncclUint8, r, comm_, stream_));
      }
    }
    RETURN_IF_NCCL(Cuda().ncclGroupEnd());
    RETURN_IF_ERROR_(WaitComm(deadline, "ncclGroupEnd (data)"));
    recv->assign(static_cast<size_t>(size_), {});
    for (int r = 0; r < size_; ++r) {
      (*recv)[r].resize(static_cast<size_t>(recv_counts[r]));
      if (recv_counts[r] == 0) continue;
      RETURN_IF_CUDA(Cuda().cudaMemcpyAsync((*recv)[r].data(),
                                            recv_buffer_.data() + recv_offsets[r], recv_counts[r],
                                            cudaMemcpyDeviceToHost, stream_));
    }
    return WaitStream(deadline, "data");
  }

  // Polls the communicator's async state until no operation is in progress.
  absl::Status WaitComm(absl::Time deadline, const char* what) {
    while (true) {
      ncclResult_t state = ncclSuccess;
      RETURN_IF_NCCL(Cuda().ncclCommGetAsyncError(comm_, &state));
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) return NcclStatus(state, what);
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(what, ": deadline passed"));
      }
      std::this_thread::yield();
    }
  }

  // Polls the stream (and the communicator, so a dead peer ends the wait) until it is idle.
  absl::Status WaitStream(absl::Time deadline, const char* what) {
    while (true) {
      const cudaError_t query = Cuda().cudaStreamQuery(stream_);
      if (query == cudaSuccess) return absl::OkStatus();
      if (query != cudaErrorNotReady) return CudaStatus(query, "cudaStreamQuery");
      ncclResult_t state = ncclSuccess;
      RETURN_IF_NCCL(Cuda().ncclCommGetAsyncError(comm_, &state));
      if (state != ncclSuccess && state != ncclInProgress) return NcclStatus(state, what);
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat("nccl ", what, ": deadline passed"));
      }
      std::this_thread::yield();
    }
  }

  const int rank_, size_, device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer counts_, send_buffer_, recv_buffer_;
  absl::Status broken_;
};

}  // namespace

absl::StatusOr<int> CudaDeviceCount() {
  if (!Cuda().status.ok()) return Cuda().status;
  int count = 0;
  const cudaError_t error = Cuda().cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrCat("no usable CUDA device: ", Cuda().cudaGetErrorString(error)));
  }
  return count;
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(int rank, int size, int device,
                                                                   Rendezvous& rendezvous,
                                                                   absl::Time deadline) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("nccl communicator: rank ", rank, " of ", size));
  }
  if (!Cuda().status.ok()) return Cuda().status;
  auto comm = std::make_unique<NcclCommunicator>(rank, size, device);
  absl::Status status = comm->Init(rendezvous, deadline);
  if (!status.ok()) return status;
  return comm;
}

}  // namespace epinfer
