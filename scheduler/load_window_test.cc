#include "scheduler/load_window.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

v1::TelemetryReport Report(uint32_t rank, uint64_t version, uint64_t first_step, uint64_t end_step,
                           uint64_t rows) {
  v1::TelemetryReport r;
  r.set_rank(rank);
  r.set_placement_version(version);
  r.set_first_step(first_step);
  r.set_end_step(end_step);
  v1::LayerSlotLoad* layer = r.add_slot_load();
  layer->set_layer(1);
  layer->add_tokens_per_slot(rows);
  return r;
}

// Rank 0 has sent two reports since the switch to version 2, rank 1 one, rank 2 none yet, rank 3
// only under version 1: per step the two reporting ranks carry the same load, and the snapshot
// says only two ranks describe version 2.
TEST(LoadWindowTest, RankLoadsAreRatesPerStepOfTheRanksReportingTheNewestPlacement) {
  LoadWindow window(absl::Seconds(60));
  const absl::Time now = absl::Now();
  window.Add(Report(0, 2, 0, 10, 100), now);
  window.Add(Report(0, 2, 10, 20, 100), now);
  window.Add(Report(1, 2, 0, 10, 100), now);
  window.Add(Report(3, 1, 0, 10, 900), now);
  const LoadSnapshot s = window.Snapshot(now);
  EXPECT_EQ(s.placement_version, 2u);
  EXPECT_EQ(s.ranks_at_version, 2);
  ASSERT_EQ(s.rank_load.at(1).size(), 2u);
  EXPECT_DOUBLE_EQ(s.rank_load.at(1).at(0), 10.0);
  EXPECT_DOUBLE_EQ(s.rank_load.at(1).at(1), 10.0);
}

// Layer 1's hot rank is 0, layer 2's is 1: summed per rank the load looks even, but every step
// waits 30 rows' worth in each layer where the mean is 20 (the reference: 60 / 40).
TEST(LoadWindowTest, StepImbalanceCountsEachLayersSlowestRank) {
  const std::map<uint32_t, std::map<uint32_t, double>> load = {{1, {{0, 30}, {1, 10}}},
                                                               {2, {{0, 10}, {1, 30}}}};
  EXPECT_DOUBLE_EQ(StepImbalance(load, 2), 60.0 / 40.0);
  EXPECT_DOUBLE_EQ(StepImbalance({}, 2), 1.0);
  EXPECT_DOUBLE_EQ(StepImbalance({{1, {{0, 5}}}}, 4), 5.0 / (5.0 / 4));
}

}  // namespace
}  // namespace epinfer
