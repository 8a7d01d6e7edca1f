#include "worker/comm/nccl.h"

#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/conformance.h"

namespace epinfer {
namespace {

// The CUDA devices of this machine; the calling test skips, saying why, when there are fewer
// than `needed`.
#define REQUIRE_CUDA_DEVICES(needed)                                                      \
  absl::StatusOr<int> devices_ = CudaDeviceCount();                                       \
  if (!devices_.ok() || *devices_ < (needed)) {                                           \
    GTEST_SKIP() << "needs " << (needed) << " CUDA device(s); this machine has "          \
                 << (devices_.ok() ? std::to_string(*devices_)                            \
                                   : std::string(devices_.status().message()))            \
                 << ": the NCCL backend is built but this test does not run"; \
  }                                                                                       \
  const int devices = *devices_

std::unique_ptr<Rendezvous> FreshRendezvous(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/" + name;
  std::filesystem::remove_all(dir);
  return MakeFileRendezvous(dir, "nccl");
}

// One rank per CUDA device (NCCL allows one rank of a communicator per device), as threads. On
// a one-GPU machine that is a group of one: every transfer goes to itself through NCCL.
TEST(NcclCommunicatorTest, EveryRankPassesTheConformanceSuite) {
  REQUIRE_CUDA_DEVICES(1);
  const int size = std::min(devices, 4);
  auto rendezvous = FreshRendezvous("nccl_conformance");
  std::vector<absl::Status> results(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto comm = MakeNcclCommunicator(r, size, r, *rendezvous, absl::Now() + absl::Seconds(120));
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      EXPECT_STREQ((*comm)->backend(), "nccl");
      EXPECT_EQ((*comm)->rank(), r);
      EXPECT_EQ((*comm)->size(), size);
      ConformanceOptions options;
      options.steps = 6;
      results[r] = RunConformance(**comm, options);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < size; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

// Rank 1 takes part in the rendezvous but never joins the NCCL group: rank 0's initialisation
// must fail once its deadline passes (and abort its half-made communicator), not wait forever.
TEST(NcclCommunicatorTest, APeerThatNeverJoinsFailsInitialisationAtTheDeadline) {
  REQUIRE_CUDA_DEVICES(1);
  (void)devices;
  auto rendezvous = FreshRendezvous("nccl_missing_peer");
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  std::thread absent([&] { (void)rendezvous->Exchange(1, 2, "", deadline); });
  const absl::Time start = absl::Now();
  auto comm = MakeNcclCommunicator(0, 2, 0, *rendezvous, deadline);
  const absl::Duration took = absl::Now() - start;
  absent.join();
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  // A bound against hanging, far above the 5 s deadline: not a timing measurement.
  EXPECT_LT(took, absl::Seconds(60));
}

// With two devices: rank 1 stops taking part after one step, so rank 0's next all-to-all must
// fail at its deadline, and every call after that must fail at once with the same error.
TEST(NcclCommunicatorTest, APeerThatStopsFailsTheNextCollectiveAtItsDeadline) {
  REQUIRE_CUDA_DEVICES(2);
  (void)devices;
  auto rendezvous = FreshRendezvous("nccl_stopped_peer");
  std::vector<std::unique_ptr<Communicator>> comms(2);
  std::vector<absl::Status> made(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm = MakeNcclCommunicator(r, 2, r, *rendezvous, absl::Now() + absl::Seconds(120));
      made[r] = comm.status();
      if (comm.ok()) comms[r] = *std::move(comm);
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(made[0].ok()) << made[0];
  ASSERT_TRUE(made[1].ok()) << made[1];
  threads.clear();
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] { made[r] = comms[r]->Barrier(absl::Now() + absl::Seconds(60)); });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(made[0].ok()) << made[0];
  ASSERT_TRUE(made[1].ok()) << made[1];

  const std::vector<uint8_t> bytes(1 << 20, 7);
  std::vector<absl::Span<const uint8_t>> send(2, absl::MakeConstSpan(bytes));
  std::vector<std::vector<uint8_t>> recv;
  const absl::Time start = absl::Now();
  absl::Status status = comms[0]->AllToAllV(send, &recv, absl::Now() + absl::Seconds(3));
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));  // a bound against hanging
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  absl::Status again = comms[0]->AllToAllV(send, &recv, absl::Now() + absl::Seconds(3));
  EXPECT_EQ(again, status);
  comms[0].reset();  // aborts the broken communicator
  comms[1].reset();  // rank 1 never sent: its own communicator finalises on its own
}

TEST(NcclCommunicatorTest, BadRanksAreInvalidArguments) {
  auto rendezvous = FreshRendezvous("nccl_bad_ranks");
  EXPECT_EQ(MakeNcclCommunicator(2, 2, 0, *rendezvous, absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeNcclCommunicator(0, 0, 0, *rendezvous, absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeNcclCommunicator(-1, 2, 0, *rendezvous, absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace epinfer
