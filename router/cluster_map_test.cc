#include "router/cluster_map.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

ClusterMap::Options TwoWorkers() {
  ClusterMap::Options o;
  o.expected_workers = 2;
  o.num_layers = 3;
  o.moe_layers = {false, true, true};
  o.num_logical_experts = 16;
  return o;
}

WorkerInfo Worker(const std::string& id, const std::string& address = "") {
  return WorkerInfo{id, "127.0.0.1", 5000 + static_cast<int>(id.back()), 0, address};
}

const absl::Time t0 = absl::FromUnixSeconds(1000);

TEST(ClusterMapTest, AGroupFormsWhenTheExpectedWorkersRegisterAndCompletesWithAddresses) {
  ClusterMap map(TwoWorkers());
  EXPECT_EQ(map.Register(Worker("w1"), t0).status().code(), absl::StatusCode::kUnavailable);
  auto a0 = map.Register(Worker("w0"), t0);
  ASSERT_TRUE(a0.ok()) << a0.status();
  EXPECT_EQ(a0->rank, 0);
  EXPECT_EQ(a0->world_size, 2);
  EXPECT_EQ(a0->placement.LocalExperts(1, 0).size(), 8u);
  auto a1 = map.Register(Worker("w1"), t0);
  ASSERT_TRUE(a1.ok());
  EXPECT_EQ(a1->rank, 1);
  EXPECT_EQ(a1->epoch, a0->epoch);
  EXPECT_FALSE(map.Group(a0->epoch)->complete);
  EXPECT_FALSE(map.ServingGroup());
  ASSERT_TRUE(map.Register(Worker("w0", "addr0"), t0).ok());
  ASSERT_TRUE(map.Register(Worker("w1", "addr1"), t0).ok());
  auto group = map.Group(a0->epoch);
  ASSERT_TRUE(group->complete);
  EXPECT_EQ(group->members[1].info.communicator_address, "addr1");
  EXPECT_TRUE(map.ServingGroup());
}

TEST(ClusterMapTest, ADeadWorkerBreaksTheEpochAndSurvivorsFormASmallerOneThenRejoinIt) {
  ClusterMap map(TwoWorkers());
  map.Register(Worker("w0"), t0).IgnoreError();
  const uint64_t e1 = map.Register(Worker("w1"), t0)->epoch;
  map.Register(Worker("w0", "a"), t0).IgnoreError();
  map.Register(Worker("w1", "b"), t0).IgnoreError();
  // w1 goes silent; w0 keeps beating.
  absl::Time t = t0;
  for (int i = 0; i < 4; ++i) {
    t += absl::Milliseconds(500);
    EXPECT_TRUE(map.Heartbeat("w0", e1, {}, t).known);
    map.Tick(t);
  }
  EXPECT_FALSE(map.ServingGroup());
  EXPECT_FALSE(map.Heartbeat("w0", e1, {}, t).known);  // told to re-register
  EXPECT_EQ(map.Register(Worker("w0"), t).status().code(), absl::StatusCode::kUnavailable);
  t += absl::Seconds(2);  // settle: form without w1
  auto alone = map.Register(Worker("w0"), t);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_GT(alone->epoch, e1);
  EXPECT_EQ(alone->world_size, 1);
  EXPECT_EQ(alone->placement.LocalExperts(1, 0).size(), 16u);
  ASSERT_TRUE(map.Register(Worker("w0", "a2"), t).ok());
  ASSERT_TRUE(map.ServingGroup());
  // w1 comes back: a new epoch with both, w0 is told to re-register, ranks as before.
  t += absl::Milliseconds(100);
  auto back = map.Register(Worker("w1"), t);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rank, 1);
  EXPECT_EQ(back->world_size, 2);
  EXPECT_FALSE(map.Heartbeat("w0", alone->epoch, {}, t).known);
  auto again = map.Register(Worker("w0"), t);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->rank, 0);
  EXPECT_EQ(again->epoch, back->epoch);
}

TEST(ClusterMapTest, PlacementReplicatesExpertsWhenRanksDoNotDivideThem) {
  ClusterMap::Options o = TwoWorkers();
  auto p = ClusterMap::DefaultPlacement(o, 3);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->layers[1].slots_per_rank, 6);
  EXPECT_EQ(p->LocalExperts(1, 2), (std::vector<int32_t>{12, 13, 14, 15, 0, 1}));
  EXPECT_EQ(p->layers[2].log2phy[0].size(), 2u);
}

TEST(ClusterMapTest, BadWorkerInfoIsRejected) {
  ClusterMap map(TwoWorkers());
  EXPECT_EQ(map.Register(WorkerInfo{"", "h", 1}, t0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.Register(WorkerInfo{"w", "h", 70000}, t0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace epinfer
