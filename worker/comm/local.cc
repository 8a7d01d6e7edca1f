#include "worker/comm/local.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace epinfer {
namespace {

// Shared state. A collective is numbered by each rank's call count (`seq`); ranks call the same
// collectives in the same order, so equal numbers are the same collective. A call posts its send
// buffers, waits for every peer to post, copies what is addressed to it, and waits for every peer
// to finish copying before it returns (so its send buffers may then be reused).
struct Shared {
  explicit Shared(int n)
      : size(n), posted_seq(n, 0), done_seq(n, 0), posted(n), dead(n, false) {}

  const int size;
  absl::Mutex mu;
  std::vector<uint64_t> posted_seq ABSL_GUARDED_BY(mu);
  std::vector<uint64_t> done_seq ABSL_GUARDED_BY(mu);
  std::vector<std::vector<absl::Span<const uint8_t>>> posted ABSL_GUARDED_BY(mu);
  std::vector<bool> dead ABSL_GUARDED_BY(mu);
};

class LocalCommunicator : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<Shared> shared, int rank)
      : shared_(std::move(shared)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return shared_->size; }
  const char* backend() const override { return "local"; }

  absl::Status AllToAllV(const std::vector<absl::Span<const uint8_t>>& send,
                         std::vector<std::vector<uint8_t>>* recv, absl::Time deadline) override {
    if (send.size() != static_cast<size_t>(size())) {
      return absl::InvalidArgumentError(absl::StrCat("AllToAllV: ", send.size(),
                                                     " send buffers for a group of ", size()));
    }
    return Exchange(send, recv, deadline, "AllToAllV");
  }

  absl::Status AllGather(absl::Span<const uint8_t> mine, std::vector<uint8_t>* out,
                         absl::Time deadline) override {
    std::vector<absl::Span<const uint8_t>> send(static_cast<size_t>(size()), mine);
    std::vector<std::vector<uint8_t>> parts;
    absl::Status status = Exchange(send, &parts, deadline, "AllGather");
    if (!status.ok()) return status;
    out->clear();
    for (int r = 0; r < size(); ++r) {
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

  void Kill() {
    absl::MutexLock lock(&shared_->mu);
    shared_->dead[rank_] = true;
  }

 private:
  // Waits until `ready(r)` holds for every rank r; fails fast when a rank is dead.
  absl::Status WaitForAll(const std::vector<uint64_t>& seqs, uint64_t seq, absl::Time deadline,
                          const char* what, const char* phase)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu) {
    auto all_there = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu) {
      for (int r = 0; r < size(); ++r) {
        if (shared_->dead[r] || seqs[r] < seq) return false;
      }
      return true;
    };
    auto any_dead = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu) {
      for (int r = 0; r < size(); ++r) {
        if (shared_->dead[r]) return r;
      }
      return -1;
    };
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu) {
      return all_there() || any_dead() >= 0;
    };
    shared_->mu.AwaitWithDeadline(absl::Condition(&done), deadline);
    if (int r = any_dead(); r >= 0) {
      return absl::UnavailableError(absl::StrCat(what, " #", seq, ": rank ", r, " is dead"));
    }
    if (!all_there()) {
      std::string missing;
      for (int r = 0; r < size(); ++r) {
        if (seqs[r] < seq) absl::StrAppend(&missing, missing.empty() ? "" : ",", r);
      }
      return absl::DeadlineExceededError(absl::StrCat(what, " #", seq, " (", phase,
                                                      "): ranks ", missing,
                                                      " did not arrive before the deadline"));
    }
    return absl::OkStatus();
  }

  absl::Status Exchange(const std::vector<absl::Span<const uint8_t>>& send,
                        std::vector<std::vector<uint8_t>>* recv, absl::Time deadline,
                        const char* what) {
    Shared& s = *shared_;
    const uint64_t seq = ++seq_;
    std::vector<absl::Span<const uint8_t>> incoming(static_cast<size_t>(size()));
    {
      absl::MutexLock lock(&s.mu);
      if (s.dead[rank_]) return absl::UnavailableError(absl::StrCat(what, ": this rank is dead"));
      s.posted[rank_] = send;
      s.posted_seq[rank_] = seq;
      absl::Status status = WaitForAll(s.posted_seq, seq, deadline, what, "send");
      if (!status.ok()) return status;
      for (int r = 0; r < size(); ++r) incoming[r] = s.posted[r][rank_];
    }
    // Peers' buffers stay valid until this rank marks the collective done below, so the copies
    // run outside the lock, in parallel across ranks.
    recv->resize(static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r) (*recv)[r].assign(incoming[r].begin(), incoming[r].end());
    absl::MutexLock lock(&s.mu);
    s.done_seq[rank_] = seq;
    return WaitForAll(s.done_seq, seq, deadline, what, "receive");
  }

  std::shared_ptr<Shared> shared_;
  const int rank_;
  uint64_t seq_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> LocalGroup::Create(int size) {
  auto shared = std::make_shared<Shared>(size);
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<LocalCommunicator>(shared, r));
  return ranks;
}

void KillLocalRank(Communicator& comm) { static_cast<LocalCommunicator&>(comm).Kill(); }

}  // namespace epinfer
