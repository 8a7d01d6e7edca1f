#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/ucx.h"

namespace epinfer {
namespace {

// A rendezvous whose peers published fixed blobs; this rank's own blob is what it publishes.
class FixedRendezvous : public Rendezvous {
 public:
  explicit FixedRendezvous(std::vector<std::string> blobs) : blobs_(std::move(blobs)) {}
  absl::StatusOr<std::vector<std::string>> Exchange(int rank, int size, const std::string& mine,
                                                    absl::Time) override {
    std::vector<std::string> all = blobs_;
    all.resize(static_cast<size_t>(size));
    all[rank] = mine;
    return all;
  }

 private:
  std::vector<std::string> blobs_;
};

TEST(UcxCommunicatorTest, LaneCountsOutOfRangeAreInvalidArguments) {
  FixedRendezvous rendezvous({});
  for (int lanes : {0, -1, kMaxUcxLanes + 1}) {
    auto comm = MakeUcxCommunicator(0, 1, rendezvous, absl::Now() + absl::Seconds(10), lanes);
    ASSERT_FALSE(comm.ok()) << lanes;
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(comm.status().message().find("lanes"), std::string::npos) << comm.status();
  }
}

// A peer's address blob that is empty, claims no lanes, or is cut short inside an address:
// INVALID_ARGUMENT naming the peer, before any endpoint is made (no crash, no read past it).
TEST(UcxCommunicatorTest, MalformedPeerAddressesAreInvalidArgumentsNamingThePeer) {
  const std::string two_lanes_cut_short = std::string("\x02\0\0\0\x05\0\0\0ab", 10);
  for (const std::string& blob : {std::string(), std::string("\0\0\0\0", 4), two_lanes_cut_short}) {
    FixedRendezvous rendezvous({"", blob});
    auto comm = MakeUcxCommunicator(0, 2, rendezvous, absl::Now() + absl::Seconds(10));
    ASSERT_FALSE(comm.ok());
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
    EXPECT_NE(comm.status().message().find("rank 1"), std::string::npos) << comm.status();
  }
}

TEST(UcxCommunicatorTest, AOneRankGroupWithLanesExchangesWithItself) {
  FixedRendezvous rendezvous({});
  auto comm = MakeUcxCommunicator(0, 1, rendezvous, absl::Now() + absl::Seconds(10), 3);
  ASSERT_TRUE(comm.ok()) << comm.status();
  const std::vector<uint8_t> bytes(1 << 20, 9);
  std::vector<std::vector<uint8_t>> recv;
  ASSERT_TRUE((*comm)->AllToAllV({absl::MakeConstSpan(bytes)}, &recv,
                                 absl::Now() + absl::Seconds(10)).ok());
  ASSERT_EQ(recv.size(), 1u);
  EXPECT_EQ(recv[0], bytes);
}

}  // namespace
}  // namespace epinfer
