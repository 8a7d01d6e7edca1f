#include "worker/comm/local.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/conformance.h"

namespace epinfer {
namespace {

// Runs `body` on every rank of a local group, each in its own thread; returns each rank's status.
std::vector<absl::Status> RunOnAllRanks(int size,
                                        const std::function<absl::Status(Communicator&)>& body) {
  auto ranks = LocalGroup::Create(size);
  std::vector<absl::Status> results(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] { results[r] = body(*ranks[r]); });
  }
  for (auto& t : threads) t.join();
  return results;
}

class LocalConformanceTest : public ::testing::TestWithParam<int> {};

TEST_P(LocalConformanceTest, EveryRankPassesTheConformanceSuite) {
  ConformanceOptions options;
  options.steps = 8;
  for (const absl::Status& s :
       RunOnAllRanks(GetParam(), [&](Communicator& c) { return RunConformance(c, options); })) {
    EXPECT_TRUE(s.ok()) << s;
  }
}

INSTANTIATE_TEST_SUITE_P(GroupSizes, LocalConformanceTest, ::testing::Values(1, 2, 3, 4));

TEST(LocalCommunicatorTest, AKilledPeerFailsTheOthersWithUnavailable) {
  auto ranks = LocalGroup::Create(3);
  std::vector<absl::Status> results(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      ConformanceOptions options;
      options.steps = 10;
      options.large_bytes = 1 << 16;
      options.timeout = absl::Seconds(30);
      if (r == 2) options.on_step = [&](int step) { if (step == 4) KillLocalRank(*ranks[2]); };
      results[r] = RunConformance(*ranks[r], options);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(results[r].code(), absl::StatusCode::kUnavailable) << r << ": " << results[r];
  }
}

TEST(LocalCommunicatorTest, APeerThatNeverArrivesFailsTheCallAtItsDeadline) {
  auto ranks = LocalGroup::Create(2);
  std::vector<uint8_t> out;
  absl::Status status = ranks[0]->AllGather({}, &out, absl::Now() + absl::Milliseconds(200));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_NE(std::string(status.message()).find("ranks 1"), std::string::npos) << status;
}

TEST(LocalCommunicatorTest, WrongNumberOfSendBuffersIsAnError) {
  auto ranks = LocalGroup::Create(2);
  std::vector<std::vector<uint8_t>> recv;
  EXPECT_EQ(ranks[0]->AllToAllV({{}}, &recv, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace epinfer
