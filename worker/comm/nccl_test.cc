#include "worker/comm/nccl.h"

#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/conformance.h"

namespace epinfer {
namespace {

// One rank per CUDA device (NCCL allows one rank of a communicator per device), as threads.
TEST(NcclCommunicatorTest, EveryRankPassesTheConformanceSuite) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok() || *devices == 0) {
    GTEST_SKIP() << "no CUDA device on this machine ("
                 << (devices.ok() ? "0 devices" : std::string(devices.status().message()))
                 << "): the NCCL backend is built and linked but not run";
  }
  const int size = std::min(*devices, 4);
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/nccl_rendezvous";
  std::filesystem::remove_all(dir);
  auto rendezvous = MakeFileRendezvous(dir, "nccl");
  std::vector<absl::Status> results(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto comm = MakeNcclCommunicator(r, size, r, *rendezvous, absl::Now() + absl::Seconds(120));
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      ConformanceOptions options;
      options.steps = 6;
      results[r] = RunConformance(**comm, options);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < size; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

}  // namespace
}  // namespace epinfer
