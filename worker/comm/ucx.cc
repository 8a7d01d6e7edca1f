#include "worker/comm/ucx.h"

#include <ucp/api/ucp.h>

#include <atomic>
#include <deque>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace epinfer {
namespace {

// The one place UCX status codes become absl::Status, with the call named.
absl::Status UcxStatus(ucs_status_t status, const char* call) {
  if (status == UCS_OK) return absl::OkStatus();
  const std::string message = absl::StrCat(call, ": ", ucs_status_string(status));
  switch (status) {
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
      return absl::UnavailableError(message);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(message);
    case UCS_ERR_CANCELED:
      return absl::CancelledError(message);
    default:
      return absl::InternalError(message);
  }
}

// Tags: the collective's number in the high 40 bits, the sender's rank in the low 24.
constexpr int kRankBits = 24;
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};
ucp_tag_t Tag(uint64_t seq, int src) { return (seq << kRankBits) | static_cast<ucp_tag_t>(src); }

class UcxCommunicator : public Communicator {
 public:
  UcxCommunicator(int rank, int size) : rank_(rank), size_(size), failed_peer_(-1) {}

  ~UcxCommunicator() override {
    for (ucp_ep_h ep : eps_) {
      if (ep == nullptr) continue;
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &param);
      if (UCS_PTR_IS_PTR(request)) {
        const absl::Time until = absl::Now() + absl::Seconds(2);
        while (ucp_request_check_status(request) == UCS_INPROGRESS && absl::Now() < until) {
          ucp_worker_progress(worker_);
        }
        ucp_request_free(request);
      }
    }
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  absl::Status Init(Rendezvous& rendezvous, absl::Time deadline) {
    ucp_config_t* config = nullptr;
    absl::Status status = UcxStatus(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read");
    if (!status.ok()) return status;

    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG;
    status = UcxStatus(ucp_init(&params, config, &context_), "ucp_init");
    ucp_config_release(config);
    if (!status.ok()) return status;
    ucp_worker_params_t worker_params{};
    worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
    status = UcxStatus(ucp_worker_create(context_, &worker_params, &worker_), "ucp_worker_create");
    if (!status.ok()) return status;
    ucp_address_t* address = nullptr;
    size_t length = 0;
    status = UcxStatus(ucp_worker_get_address(worker_, &address, &length), "ucp_worker_get_address");
    if (!status.ok()) return status;
    std::string mine(reinterpret_cast<const char*>(address), length);
    ucp_worker_release_address(worker_, address);

    absl::StatusOr<std::vector<std::string>> addresses =
        rendezvous.Exchange(rank_, size_, mine, deadline);
    if (!addresses.ok()) return addresses.status();
    eps_.assign(static_cast<size_t>(size_), nullptr);
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;  // messages to self are copies
      ucp_ep_params_t ep_params{};
      ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                             UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
      ep_params.address = reinterpret_cast<const ucp_address_t*>((*addresses)[r].data());
      ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      peer_args_.push_back({this, r});
      ep_params.err_handler.cb = &UcxCommunicator::OnPeerError;
      ep_params.err_handler.arg = &peer_args_.back();  // deque: stable address
      status = UcxStatus(ucp_ep_create(worker_, &ep_params, &eps_[r]), "ucp_ep_create");
      if (!status.ok()) return status;
    }
    // Endpoints connect lazily; a barrier makes sure every peer is reachable before use.
    return Barrier(deadline);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "ucx"; }

  absl::Status AllToAllV(const std::vector<absl::Span<const uint8_t>>& send,
                         std::vector<std::vector<uint8_t>>* recv, absl::Time deadline) override {
    if (send.size() != static_cast<size_t>(size_)) {
      return absl::InvalidArgumentError(absl::StrCat("AllToAllV: ", send.size(),
                                                     " send buffers for a group of ", size_));
    }
    return Exchange(send, recv, deadline, "AllToAllV");
  }

  absl::Status AllGather(absl::Span<const uint8_t> mine, std::vector<uint8_t>* out,
                         absl::Time deadline) override {
    std::vector<absl::Span<const uint8_t>> send(static_cast<size_t>(size_), mine);
    std::vector<std::vector<uint8_t>> parts;
    absl::Status status = Exchange(send, &parts, deadline, "AllGather");
    if (!status.ok()) return status;
    out->clear();
    for (int r = 0; r < size_; ++r) {
      if (parts[r].size() != mine.size()) {
        return absl::InvalidArgumentError(absl::StrCat("AllGather: rank ", r, " sent ",
                                                       parts[r].size(), " bytes, this rank ",
                                                       mine.size()));
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
  struct PeerArg {
    UcxCommunicator* self;
    int rank;
  };

  static void OnPeerError(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* peer = static_cast<PeerArg*>(arg);
    int expected = -1;
    peer->self->failed_peer_.compare_exchange_strong(expected, peer->rank);
    peer->self->failure_status_ = status;
  }

  // Sends every peer its part and receives every peer's, one tagged message each way, into
  // buffers sized from the probed message (no intermediate copy).
  absl::Status Exchange(const std::vector<absl::Span<const uint8_t>>& send,
                        std::vector<std::vector<uint8_t>>* recv, absl::Time deadline,
                        const char* what) {
    if (!broken_.ok()) return broken_;
    const uint64_t seq = ++seq_;
    recv->resize(static_cast<size_t>(size_));  // keeps the buffers' capacity across calls
    (*recv)[rank_].assign(send[rank_].begin(), send[rank_].end());
    std::vector<void*> requests;
    ucp_request_param_t param{};
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      ucs_status_ptr_t request =
          ucp_tag_send_nbx(eps_[r], send[r].data(), send[r].size(), Tag(seq, rank_), &param);
      if (UCS_PTR_IS_ERR(request)) return Fail(UcxStatus(UCS_PTR_STATUS(request), "ucp_tag_send_nbx"), requests);
      if (request != nullptr) requests.push_back(request);
    }
    std::vector<bool> receiving(static_cast<size_t>(size_), false);
    receiving[rank_] = true;
    int to_probe = size_ - 1;
    int idle = 0;
    while (true) {
      const unsigned progressed = ucp_worker_progress(worker_);
      for (int r = 0; r < size_ && to_probe > 0; ++r) {
        if (receiving[r]) continue;
        ucp_tag_recv_info_t info{};
        ucp_tag_message_h message = ucp_tag_probe_nb(worker_, Tag(seq, r), kFullMask, 1, &info);
        if (message == nullptr) continue;
        (*recv)[r].resize(info.length);
        ucs_status_ptr_t request =
            ucp_tag_msg_recv_nbx(worker_, (*recv)[r].data(), info.length, message, &param);
        if (UCS_PTR_IS_ERR(request)) {
          return Fail(UcxStatus(UCS_PTR_STATUS(request), "ucp_tag_msg_recv_nbx"), requests);
        }
        if (request != nullptr) requests.push_back(request);
        receiving[r] = true;
        --to_probe;
      }
      // Completed requests are freed; a failed one fails the collective.
      for (size_t i = 0; i < requests.size();) {
        const ucs_status_t status = ucp_request_check_status(requests[i]);
        if (status == UCS_INPROGRESS) {
          ++i;
          continue;
        }
        ucp_request_free(requests[i]);
        requests[i] = requests.back();
        requests.pop_back();
        if (status != UCS_OK) {
          return Fail(absl::Status(UcxStatus(status, what).code(),
                                   absl::StrCat(what, " #", seq, ": ", ucs_status_string(status))),
                      requests);
        }
      }
      if (to_probe == 0 && requests.empty()) return absl::OkStatus();
      if (const int peer = failed_peer_.load(); peer >= 0) {
        return Fail(absl::UnavailableError(absl::StrCat(what, " #", seq, ": rank ", peer,
                                                        " failed (",
                                                        ucs_status_string(failure_status_), ")")),
                    requests);
      }
      if (absl::Now() >= deadline) {
        std::string missing;
        for (int r = 0; r < size_; ++r) {
          if (!receiving[r]) absl::StrAppend(&missing, missing.empty() ? "" : ",", r);
        }
        return Fail(absl::DeadlineExceededError(absl::StrCat(
                        what, " #", seq, ": deadline passed waiting for ranks ",
                        missing.empty() ? std::string("(transfers in flight)") : missing)),
                    requests);
      }
      // Poll hard while traffic flows; back off when idle so waiting ranks leave the CPU to
      // ranks still computing.
      idle = progressed ? 0 : idle + 1;
      if (idle > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // Cancels what is in flight and marks the communicator broken: after a failed collective the
  // group must re-form (a new communicator epoch).
  absl::Status Fail(absl::Status status, std::vector<void*>& requests) {
    for (void* request : requests) ucp_request_cancel(worker_, request);
    const absl::Time until = absl::Now() + absl::Seconds(1);
    for (void* request : requests) {
      while (ucp_request_check_status(request) == UCS_INPROGRESS && absl::Now() < until) {
        ucp_worker_progress(worker_);
      }
      ucp_request_free(request);
    }
    requests.clear();
    broken_ = status;
    return status;
  }

  const int rank_, size_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  std::vector<ucp_ep_h> eps_;
  std::deque<PeerArg> peer_args_;
  std::atomic<int> failed_peer_;
  ucs_status_t failure_status_ = UCS_OK;
  uint64_t seq_ = 0;
  absl::Status broken_;
};

}  // namespace

void PrepareUcxEnvironment() {
  // Peer failure detection (UCP_ERR_HANDLING_MODE_PEER) rules out the shared-memory transports
  // unless their memory domains handle errors too; without this, ranks on one host talk TCP.
  // These are transport (UCT) settings, read only from the environment. Explicit settings win.
  // (UCX 1.13 reads SYSV_ERROR_HANDLING; its posix transport has no such switch.)
  setenv("UCX_SYSV_ERROR_HANDLING", "y", /*overwrite=*/0);
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeUcxCommunicator(int rank, int size,
                                                                  Rendezvous& rendezvous,
                                                                  absl::Time deadline) {
  if (size < 1 || size >= (1 << kRankBits) || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("ucx communicator: rank ", rank, " of ", size));
  }
  auto comm = std::make_unique<UcxCommunicator>(rank, size);
  absl::Status status = comm->Init(rendezvous, deadline);
  if (!status.ok()) return status;
  return comm;
}

}  // namespace epinfer
