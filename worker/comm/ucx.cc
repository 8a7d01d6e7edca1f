#include "worker/comm/ucx.h"

#include <omp.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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

// Messages of at least this many bytes are split over the lanes (each lane a UCP worker driven
// by its own thread); smaller ones go whole over lane 0.
constexpr size_t kLaneMinBytes = size_t{256} << 10;

// The communicator's address blob: the lane count, then each lane's worker address, each as a
// 32-bit length and its bytes.
std::string PackAddresses(const std::vector<std::string>& addresses) {
  std::string blob;
  auto put = [&blob](uint32_t v) { blob.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(static_cast<uint32_t>(addresses.size()));
  for (const std::string& a : addresses) {
    put(static_cast<uint32_t>(a.size()));
    blob += a;
  }
  return blob;
}

absl::StatusOr<std::vector<std::string>> UnpackAddresses(const std::string& blob, int rank) {
  size_t at = 0;
  auto get = [&](uint32_t* v) {
    if (blob.size() - at < sizeof *v) return false;
    std::memcpy(v, blob.data() + at, sizeof *v);
    at += sizeof *v;
    return true;
  };
  uint32_t count = 0;
  if (!get(&count) || count < 1 || count > kMaxUcxLanes) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx rendezvous: rank ", rank, " published no lane count"));
  }
  std::vector<std::string> addresses;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t length = 0;
    if (!get(&length) || blob.size() - at < length) {
      return absl::InvalidArgumentError(absl::StrCat("ucx rendezvous: rank ", rank,
                                                     "'s address of lane ", i, " is cut short"));
    }
    addresses.emplace_back(blob.data() + at, length);
    at += length;
  }
  return addresses;
}

class UcxCommunicator : public Communicator {
 public:
  UcxCommunicator(int rank, int size) : rank_(rank), size_(size), failed_peer_(-1) {}

  ~UcxCommunicator() override {
    for (Lane& lane : lanes_) {
      for (ucp_ep_h ep : lane.eps) {
        if (ep == nullptr) continue;
        ucp_request_param_t param{};
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        param.flags = UCP_EP_CLOSE_FLAG_FORCE;
        ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &param);
        if (UCS_PTR_IS_PTR(request)) {
          const absl::Time until = absl::Now() + absl::Seconds(2);
          while (ucp_request_check_status(request) == UCS_INPROGRESS && absl::Now() < until) {
            ucp_worker_progress(lane.worker);
          }
          ucp_request_free(request);
        }
      }
      if (lane.worker != nullptr) ucp_worker_destroy(lane.worker);
    }
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  absl::Status Init(Rendezvous& rendezvous, absl::Time deadline, int lanes) {
    ucp_config_t* config = nullptr;
    absl::Status status = UcxStatus(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read");
    if (!status.ok()) return status;

    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG;
    status = UcxStatus(ucp_init(&params, config, &context_), "ucp_init");
    ucp_config_release(config);
    if (!status.ok()) return status;
    // One worker per lane. With several, pool threads that differ from call to call drive them:
    // serialized access, not single-thread.
    lanes_.resize(static_cast<size_t>(lanes));
    std::vector<std::string> mine;
    for (Lane& lane : lanes_) {
      ucp_worker_params_t worker_params{};
      worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
      worker_params.thread_mode = lanes > 1 ? UCS_THREAD_MODE_SERIALIZED : UCS_THREAD_MODE_SINGLE;
      status = UcxStatus(ucp_worker_create(context_, &worker_params, &lane.worker),
                         "ucp_worker_create");
      if (!status.ok()) return status;
      ucp_address_t* address = nullptr;
      size_t length = 0;
      status = UcxStatus(ucp_worker_get_address(lane.worker, &address, &length),
                         "ucp_worker_get_address");
      if (!status.ok()) return status;
      mine.emplace_back(reinterpret_cast<const char*>(address), length);
      ucp_worker_release_address(lane.worker, address);
    }

    absl::StatusOr<std::vector<std::string>> blobs =
        rendezvous.Exchange(rank_, size_, PackAddresses(mine), deadline);
    if (!blobs.ok()) return blobs.status();
    std::vector<std::vector<std::string>> addresses;
    size_t common = lanes_.size();  // every rank uses the lanes all of them have
    for (int r = 0; r < size_; ++r) {
      absl::StatusOr<std::vector<std::string>> a = UnpackAddresses((*blobs)[r], r);
      if (!a.ok()) return a.status();
      common = std::min(common, a->size());
      addresses.push_back(*std::move(a));
    }
    while (lanes_.size() > common) {
      ucp_worker_destroy(lanes_.back().worker);
      lanes_.pop_back();
    }
    for (size_t l = 0; l < lanes_.size(); ++l) {
      Lane& lane = lanes_[l];
      lane.eps.assign(static_cast<size_t>(size_), nullptr);
      for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;  // messages to self are copies
        ucp_ep_params_t ep_params{};
        ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                               UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                               UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep_params.address = reinterpret_cast<const ucp_address_t*>(addresses[r][l].data());
        ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        peer_args_.push_back({this, r});
        ep_params.err_handler.cb = &UcxCommunicator::OnPeerError;
        ep_params.err_handler.arg = &peer_args_.back();  // deque: stable address
        status = UcxStatus(ucp_ep_create(lane.worker, &ep_params, &lane.eps[r]), "ucp_ep_create");
        if (!status.ok()) return status;
      }
    }
    // Endpoints connect lazily: a barrier, and with several lanes a message over every lane,
    // make sure every peer is reachable before use.
    status = Barrier(deadline);
    if (!status.ok() || lanes_.size() == 1) return status;
    const std::vector<uint8_t> probe(kLaneMinBytes * lanes_.size());
    const std::vector<absl::Span<const uint8_t>> send(static_cast<size_t>(size_),
                                                      absl::MakeConstSpan(probe));
    std::vector<std::vector<uint8_t>> unused;
    return AllToAllV(send, &unused, deadline);
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
    if (lanes_.size() > 1) return ExchangeOverLanes(send, recv, deadline);
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
    const Lane& lane = lanes_[0];
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      ucs_status_ptr_t request =
          ucp_tag_send_nbx(lane.eps[r], send[r].data(), send[r].size(), Tag(seq, rank_), &param);
      if (UCS_PTR_IS_ERR(request)) {
        return Fail(UcxStatus(UCS_PTR_STATUS(request), "ucp_tag_send_nbx"), requests);
      }
      if (request != nullptr) requests.push_back(request);
    }
    std::vector<bool> receiving(static_cast<size_t>(size_), false);
    receiving[rank_] = true;
    int to_probe = size_ - 1;
    int idle = 0;
    while (true) {
      const unsigned progressed = ucp_worker_progress(lane.worker);
      for (int r = 0; r < size_ && to_probe > 0; ++r) {
        if (receiving[r]) continue;
        ucp_tag_recv_info_t info{};
        ucp_tag_message_h message = ucp_tag_probe_nb(lane.worker, Tag(seq, r), kFullMask, 1, &info);
        if (message == nullptr) continue;
        (*recv)[r].resize(info.length);
        ucs_status_ptr_t request =
            ucp_tag_msg_recv_nbx(lane.worker, (*recv)[r].data(), info.length, message, &param);
        if (UCS_PTR_IS_ERR(request)) {
          return Fail(UcxStatus(UCS_PTR_STATUS(request), "ucp_tag_msg_recv_nbx"), requests);
        }
        if (request != nullptr) requests.push_back(request);
        receiving[r] = true;
        --to_probe;
      }
      if (absl::Status status = Reap(requests, what, seq); !status.ok()) {
        return Fail(status, requests);
      }
      if (to_probe == 0 && requests.empty()) return absl::OkStatus();
      if (failed_peer_.load() >= 0) return Fail(PeerFailure(what, seq), requests);
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

  // Frees the completed requests of `pending`; the first that failed, as the error of
  // collective `what` #seq (on `lane`, where one is named).
  static absl::Status Reap(std::vector<void*>& pending, const char* what, uint64_t seq,
                           int lane = -1) {
    absl::Status failed;
    for (size_t i = 0; i < pending.size();) {
      const ucs_status_t status = ucp_request_check_status(pending[i]);
      if (status == UCS_INPROGRESS) {
        ++i;
        continue;
      }
      ucp_request_free(pending[i]);
      pending[i] = pending.back();
      pending.pop_back();
      if (status != UCS_OK && failed.ok()) {
        failed = absl::Status(
            UcxStatus(status, what).code(),
            absl::StrCat(what, " #", seq, lane >= 0 ? absl::StrCat(" lane ", lane) : std::string(),
                         ": ", ucs_status_string(status)));
      }
    }
    return failed;
  }

  // The error of a collective that a peer's failure ended.
  absl::Status PeerFailure(const char* what, uint64_t seq) const {
    return absl::UnavailableError(absl::StrCat(what, " #", seq, ": rank ", failed_peer_.load(),
                                               " failed (", ucs_status_string(failure_status_),
                                               ")"));
  }

  // Cancels what is in flight and marks the communicator broken: after a failed collective the
  // group must re-form (a new communicator epoch).
  absl::Status Fail(absl::Status status, std::vector<void*>& requests) {
    Cancel(requests, lanes_[0].worker);
    broken_ = status;
    return status;
  }

  // Cancels what is in flight on `worker` and frees the requests (a bounded wait).
  static void Cancel(std::vector<void*>& requests, ucp_worker_h worker) {
    for (void* request : requests) ucp_request_cancel(worker, request);
    const absl::Time until = absl::Now() + absl::Seconds(1);
    for (void* request : requests) {
      while (ucp_request_check_status(request) == UCS_INPROGRESS && absl::Now() < until) {
        ucp_worker_progress(worker);
      }
      ucp_request_free(request);
    }
    requests.clear();
  }

  // The bytes [first, second) of a `length`-byte message that lane l of `lanes` carries.
  static std::pair<size_t, size_t> LanePart(size_t length, size_t l, size_t lanes) {
    if (length < kLaneMinBytes) return {0, l == 0 ? length : 0};
    return {length * l / lanes, length * (l + 1) / lanes};
  }

  // All-to-all-v over every lane at once. The message sizes go first (a small exchange on lane
  // 0), so that each lane posts its receives straight at their places in the final buffers; then
  // each lane sends and receives its part of every large message (small ones go whole over lane
  // 0). Lanes run on the calling thread's OpenMP pool (the kernels' threads, idle meanwhile).
  absl::Status ExchangeOverLanes(const std::vector<absl::Span<const uint8_t>>& send,
                                 std::vector<std::vector<uint8_t>>* recv, absl::Time deadline) {
    if (!broken_.ok()) return broken_;
    std::vector<uint64_t> lengths(static_cast<size_t>(size_));
    std::vector<absl::Span<const uint8_t>> length_spans;
    for (int r = 0; r < size_; ++r) {
      lengths[r] = send[r].size();
      length_spans.emplace_back(reinterpret_cast<const uint8_t*>(&lengths[r]), sizeof(uint64_t));
    }
    std::vector<std::vector<uint8_t>> incoming;
    absl::Status status = Exchange(length_spans, &incoming, deadline, "AllToAllV sizes");
    if (!status.ok()) return status;
    recv->resize(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      uint64_t length = 0;
      if (incoming[r].size() != sizeof length) {
        broken_ = absl::DataLossError(absl::StrCat("AllToAllV: rank ", r, " sent no size"));
        return broken_;
      }
      std::memcpy(&length, incoming[r].data(), sizeof length);
      if (r != rank_) (*recv)[r].resize(length);
    }
    (*recv)[rank_].assign(send[rank_].begin(), send[rank_].end());
    const uint64_t seq = ++seq_;
    const int lanes = static_cast<int>(lanes_.size());
    std::vector<absl::Status> results(lanes_.size());
    std::atomic<bool> abort{false};
    // Each pool thread drives its lanes round-robin until all are done: every lane must move at
    // once, since a lane's shared-memory FIFO fills until its peer drains it. The team is the
    // pool's usual size (threads beyond the lanes return at once): a team of another size than
    // the kernels' would park and re-wake pool threads on every switch, which cost more than
    // the lanes gained on the lent 16-core machine.
#pragma omp parallel
    {
      const int threads = omp_get_num_threads(), me = omp_get_thread_num();
      std::vector<size_t> mine;
      for (int l = me; l < lanes; l += threads) mine.push_back(static_cast<size_t>(l));
      if (!mine.empty()) RunLanes(mine, seq, send, *recv, deadline, abort, results);
    }
    // The first real error, not the CANCELLED of the lanes that stopped because of it.
    for (const absl::Status& result : results) {
      if (!result.ok() && (broken_.ok() || broken_.code() == absl::StatusCode::kCancelled)) {
        broken_ = result;
      }
    }
    return broken_;
  }

  void RunLanes(const std::vector<size_t>& mine, uint64_t seq,
                const std::vector<absl::Span<const uint8_t>>& send,
                std::vector<std::vector<uint8_t>>& recv, absl::Time deadline,
                std::atomic<bool>& abort, std::vector<absl::Status>& results) {
    const size_t lanes = lanes_.size();
    std::vector<std::vector<void*>> requests(mine.size());
    ucp_request_param_t param{};
    absl::Status failed;
    auto post = [&](size_t i, ucs_status_ptr_t request, const char* call) {
      if (UCS_PTR_IS_ERR(request)) {
        failed = UcxStatus(UCS_PTR_STATUS(request), call);
      } else if (request != nullptr) {
        requests[i].push_back(request);
      }
    };
    for (size_t i = 0; i < mine.size() && failed.ok(); ++i) {
      Lane& lane = lanes_[mine[i]];
      for (int r = 0; r < size_ && failed.ok(); ++r) {  // receives first: expected messages
        const auto [begin, end] = LanePart(recv[r].size(), mine[i], lanes);
        if (r == rank_ || begin == end) continue;
        post(i,
             ucp_tag_recv_nbx(lane.worker, recv[r].data() + begin, end - begin, Tag(seq, r),
                              kFullMask, &param),
             "ucp_tag_recv_nbx");
      }
      for (int r = 0; r < size_ && failed.ok(); ++r) {
        const auto [begin, end] = LanePart(send[r].size(), mine[i], lanes);
        if (r == rank_ || begin == end) continue;
        post(i,
             ucp_tag_send_nbx(lane.eps[r], send[r].data() + begin, end - begin,
                              Tag(seq, rank_), &param),
             "ucp_tag_send_nbx");
      }
    }
    int idle = 0;
    while (failed.ok()) {
      unsigned progressed = 0;
      bool done = true;
      for (size_t i = 0; i < mine.size() && failed.ok(); ++i) {
        progressed += ucp_worker_progress(lanes_[mine[i]].worker);
        failed = Reap(requests[i], "AllToAllV", seq, static_cast<int>(mine[i]));
        done = done && requests[i].empty();
      }
      if (!failed.ok() || done) break;
      if (failed_peer_.load() >= 0) {
        failed = PeerFailure("AllToAllV", seq);
      } else if (absl::Now() >= deadline) {
        failed = absl::DeadlineExceededError(
            absl::StrCat("AllToAllV #", seq, ": deadline passed with transfers in flight"));
      } else if (abort.load(std::memory_order_relaxed)) {
        failed = absl::CancelledError("AllToAllV: another lane failed");
      }
      // Poll hard while traffic flows; back off when idle.
      idle = progressed ? 0 : idle + 1;
      if (idle > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (!failed.ok()) abort.store(true);
    for (size_t i = 0; i < mine.size(); ++i) {
      Cancel(requests[i], lanes_[mine[i]].worker);
      results[mine[i]] = failed;
    }
  }

  struct Lane {
    ucp_worker_h worker = nullptr;
    std::vector<ucp_ep_h> eps;  // [rank]; null for this rank
  };

  const int rank_, size_;
  ucp_context_h context_ = nullptr;
  std::vector<Lane> lanes_;  // lane 0 carries all small collectives
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
                                                                  absl::Time deadline, int lanes) {
  if (size < 1 || size >= (1 << kRankBits) || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("ucx communicator: rank ", rank, " of ", size));
  }
  if (lanes < 1 || lanes > kMaxUcxLanes) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx communicator: ", lanes, " lanes (1..", kMaxUcxLanes, ")"));
  }
  auto comm = std::make_unique<UcxCommunicator>(rank, size);
  absl::Status status = comm->Init(rendezvous, deadline, lanes);
  if (!status.ok()) return status;
  return comm;
}

}  // namespace epinfer
