#include "worker/model/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/local.h"
#include "worker/kernels/linear.h"

namespace epinfer {
namespace {

TEST(ActivationCodecTest, F32RoundTripsExactly) {
  std::vector<float> x = {1.5f, -2.25f, 3e-8f, 1e30f};
  std::vector<uint8_t> bytes(ActivationBytes(4, DType::kF32));
  EncodeActivations(x.data(), 4, DType::kF32, bytes.data());
  std::vector<float> y(4);
  DecodeActivations(bytes.data(), 4, DType::kF32, y.data());
  EXPECT_EQ(x, y);
}

TEST(ActivationCodecTest, Bf16KeepsEightSignificantBits) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(300), y(300);
  for (float& v : x) v = normal(rng);
  std::vector<uint8_t> bytes(ActivationBytes(300, DType::kBF16));
  EXPECT_EQ(bytes.size(), 600u);
  EncodeActivations(x.data(), 300, DType::kBF16, bytes.data());
  DecodeActivations(bytes.data(), 300, DType::kBF16, y.data());
  for (int i = 0; i < 300; ++i) EXPECT_LE(std::fabs(x[i] - y[i]), std::fabs(x[i]) * 0x1p-8f) << i;
}

TEST(ActivationCodecTest, Fp8UsesOneScalePer128ChannelsAndHalfAnUlpOfError) {
  // Two groups with very different magnitudes: each keeps its own precision.
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  const int64_t hidden = 200;  // groups of 128 and 72
  std::vector<float> x(hidden), y(hidden);
  for (int i = 0; i < hidden; ++i) x[i] = normal(rng) * (i < 128 ? 1000.0f : 0.001f);
  std::vector<uint8_t> bytes(ActivationBytes(hidden, DType::kF8E4M3));
  EXPECT_EQ(bytes.size(), 2 * 4 + 200u);
  EncodeActivations(x.data(), hidden, DType::kF8E4M3, bytes.data());
  DecodeActivations(bytes.data(), hidden, DType::kF8E4M3, y.data());
  for (int g = 0; g < 2; ++g) {
    float amax = 0;
    for (int i = g * 128; i < std::min<int>(hidden, (g + 1) * 128); ++i) {
      amax = std::max(amax, std::fabs(x[i]));
    }
    const float scale = amax / 448.0f;
    for (int i = g * 128; i < std::min<int>(hidden, (g + 1) * 128); ++i) {
      // Normal e4m3 values: relative error ≤ 2^-4; subnormals: absolute ≤ 2^-10 × scale.
      const float bound = std::max(std::fabs(x[i]) * 0x1p-4f, scale * 0x1p-10f);
      EXPECT_LE(std::fabs(x[i] - y[i]), bound * 1.0001f) << i;
    }
  }
}

TEST(DispatchLayoutTest, ATokenGoesToEachRankOnceWithAllItsSlotsThere) {
  LayerPlacement p;
  p.num_ranks = 2;
  p.slots_per_rank = 2;
  p.phy2log = {0, 1, 2, 3};  // rank 0: experts 0,1; rank 1: experts 2,3
  ASSERT_TRUE(p.Index(4).ok());
  // token 0 → experts 0, 1 (both rank 0); token 1 → experts 3, 0.
  std::vector<int32_t> experts = {0, 1, 3, 0};
  std::vector<float> weights = {0.5f, 0.25f, 0.75f, 0.125f};
  DispatchLayout layout = BuildDispatchLayout(experts.data(), weights.data(), 2, 2, p, 0);
  EXPECT_EQ(layout.tokens[0], (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(layout.tokens[1], (std::vector<int32_t>{1}));
  EXPECT_EQ(layout.entries[0][0].local_slot, 0);
  EXPECT_EQ(layout.entries[0][1].local_slot, 1);
  EXPECT_EQ(layout.entries[0][1].weight, 0.25f);
  EXPECT_EQ(layout.entries[0][2].local_slot, 0);  // token 1's expert 0
  EXPECT_EQ(layout.entries[0][2].weight, 0.125f);
  EXPECT_EQ(layout.entries[0][3].local_slot, -1);
  EXPECT_EQ(layout.entries[1][0].local_slot, 1);  // expert 3 = rank 1's slot 1
}

// Two ranks of two slots each, expert 0 on both (slots 0 and 2), experts 1 and 2 once.
LayerPlacement ExpertZeroOnBothRanks() {
  LayerPlacement p;
  p.num_ranks = 2;
  p.slots_per_rank = 2;
  p.phy2log = {0, 1, 0, 2};
  EXPECT_TRUE(p.Index(3).ok());
  return p;
}

TEST(DispatchLayoutTest, ReplicatedExpertsAreSpreadOverTheirReplicasByToken) {
  const LayerPlacement p = ExpertZeroOnBothRanks();
  std::vector<int32_t> experts = {0, 0, 0, 0};
  std::vector<float> weights = {1, 1, 1, 1};
  DispatchLayout layout = BuildDispatchLayout(experts.data(), weights.data(), 4, 1, p, 0);
  EXPECT_EQ(layout.tokens[0], (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(layout.tokens[1], (std::vector<int32_t>{1, 3}));
  // From rank 1 the spread starts one replica on.
  layout = BuildDispatchLayout(experts.data(), weights.data(), 4, 1, p, 1);
  EXPECT_EQ(layout.tokens[0], (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(layout.tokens[1], (std::vector<int32_t>{0, 2}));
}

// Decode: each rank sends one token a step. A hot expert's replicas share them across the ranks
// (token index + sending rank), where by token index alone every rank's token 0 would go to the
// first replica.
TEST(DispatchLayoutTest, OneTokenPerRankSpreadsOverTheReplicas) {
  const LayerPlacement p = ExpertZeroOnBothRanks();
  const std::vector<int32_t> experts = {0};
  const std::vector<float> weights = {1};
  for (int32_t rank = 0; rank < 2; ++rank) {
    const DispatchLayout layout =
        BuildDispatchLayout(experts.data(), weights.data(), 1, 1, p, rank);
    EXPECT_EQ(layout.tokens[rank], (std::vector<int32_t>{0})) << rank;
    EXPECT_TRUE(layout.tokens[1 - rank].empty()) << rank;
  }
}

// Two ranks as threads, FP8 dispatch and BF16 combine, rows enough for the codec loops to split
// over the kernel threads, tokens that go to one rank and tokens that go to both: each rank gets
// exactly the codec's round trip of each routed token, in its sender's layout order, with its
// slots, and each token gets back the sum of what its ranks returned.
TEST(ExpertDispatcherTest, RanksReceiveTheEncodedRowsOfTheirTokensAndCombineAddsThemBack) {
  constexpr int kRanks = 2, kTopK = 2;
  constexpr int64_t kTokens = 96, kHidden = 1000;  // 7 full groups and one of 104 channels
  SetKernelThreads(2);
  const MoeTransportOptions transport = {DType::kF8E4M3, DType::kBF16};
  LayerPlacement p;
  p.num_ranks = kRanks;
  p.slots_per_rank = 2;
  p.phy2log = {0, 1, 2, 3};
  ASSERT_TRUE(p.Index(4).ok());
  std::vector<std::vector<float>> x(kRanks);
  std::vector<DispatchLayout> layouts;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (int r = 0; r < kRanks; ++r) {
    x[r].resize(kTokens * kHidden);
    for (float& v : x[r]) v = normal(rng);
    std::vector<int32_t> experts;
    for (int64_t t = 0; t < kTokens; ++t) {
      experts.push_back(static_cast<int32_t>(t % 4));
      experts.push_back(static_cast<int32_t>((t % 4 + 1 + (t / 4) % 3) % 4));
    }
    const std::vector<float> weights(experts.size(), 0.5f);
    layouts.push_back(BuildDispatchLayout(experts.data(), weights.data(), kTokens, kTopK, p, r));
  }

  // Each rank: dispatch, return each received row as its expert sum, combine.
  std::vector<std::unique_ptr<Communicator>> comms = LocalGroup::Create(kRanks);
  std::vector<std::vector<float>> received(kRanks), out(kRanks);
  std::vector<std::vector<std::vector<std::pair<int64_t, float>>>> rows_of_slot(kRanks);
  std::vector<absl::Status> status(kRanks);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      ExpertDispatcher dispatcher(*comms[r], transport, kHidden, kTopK, p.slots_per_rank);
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      status[r] = dispatcher.Dispatch(x[r].data(), layouts[r], deadline);
      if (!status[r].ok()) return;
      received[r].assign(dispatcher.received_rows(),
                         dispatcher.received_rows() + dispatcher.num_received() * kHidden);
      rows_of_slot[r] = dispatcher.rows_of_slot();
      out[r].assign(kTokens * kHidden, 0.0f);
      status[r] = dispatcher.Combine(received[r].data(), layouts[r], deadline, out[r].data());
    });
  }
  for (std::thread& t : threads) t.join();

  std::vector<uint8_t> fp8(ActivationBytes(kHidden, DType::kF8E4M3));
  std::vector<uint8_t> bf16(ActivationBytes(kHidden, DType::kBF16));
  std::vector<float> row(kHidden);
  std::vector<std::vector<float>> want_out(kRanks, std::vector<float>(kTokens * kHidden, 0.0f));
  bool both = false, one = false;
  for (int me = 0; me < kRanks; ++me) {
    ASSERT_TRUE(status[me].ok()) << "rank " << me << ": " << status[me];
    std::vector<std::vector<std::pair<int64_t, float>>> want_slots(p.slots_per_rank);
    int64_t global = 0;
    for (int from = 0; from < kRanks; ++from) {
      const DispatchLayout& layout = layouts[from];
      for (size_t i = 0; i < layout.tokens[me].size(); ++i, ++global) {
        const int32_t t = layout.tokens[me][i];
        const bool to_both =
            std::count(layout.tokens[1 - me].begin(), layout.tokens[1 - me].end(), t) > 0;
        both |= to_both;
        one |= !to_both;
        EncodeActivations(x[from].data() + t * kHidden, kHidden, DType::kF8E4M3, fp8.data());
        DecodeActivations(fp8.data(), kHidden, DType::kF8E4M3, row.data());
        ASSERT_LE((global + 1) * kHidden, static_cast<int64_t>(received[me].size()));
        ASSERT_EQ(std::memcmp(row.data(), received[me].data() + global * kHidden,
                              kHidden * sizeof(float)),
                  0)
            << "rank " << me << ", row " << global << " (token " << t << " of rank " << from
            << ")";
        for (int j = 0; j < kTopK; ++j) {
          const DispatchLayout::Entry& e = layout.entries[me][i * kTopK + j];
          if (e.local_slot >= 0) want_slots[e.local_slot].emplace_back(global, e.weight);
        }
        EncodeActivations(row.data(), kHidden, DType::kBF16, bf16.data());
        DecodeAddActivations(bf16.data(), kHidden, DType::kBF16,
                             want_out[from].data() + t * kHidden);
      }
    }
    EXPECT_EQ(global * kHidden, static_cast<int64_t>(received[me].size())) << "rank " << me;
    EXPECT_EQ(rows_of_slot[me], want_slots) << "rank " << me;
  }
  EXPECT_TRUE(both && one) << "the routing must send some tokens to one rank, some to both";
  for (int r = 0; r < kRanks; ++r) {
    // Combine adds the ranks' rows in rank order, as the reference above.
    EXPECT_EQ(std::memcmp(out[r].data(), want_out[r].data(), out[r].size() * sizeof(float)), 0)
        << "rank " << r;
  }
}

TEST(PlacementTest, FromJsonValidatesSlotsAndCoverage) {
  std::vector<bool> moe = {false, true, true};
  auto ok = ExpertPlacement::FromJson(R"({"num_ranks":2,"phy2log":[[0,1,2,3,0,1],[3,2,1,0,0,0]]})",
                                      moe, 4);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->layers[1].slots_per_rank, 3);
  EXPECT_EQ(ok->LocalExperts(2, 1), (std::vector<int32_t>{0, 0, 0}));
  EXPECT_EQ(ok->layers[1].log2phy[0], (std::vector<int32_t>{0, 4}));
  auto missing = ExpertPlacement::FromJson(R"({"num_ranks":2,"phy2log":[[0,1,2,2],[0,1,2,3]]})",
                                           moe, 4);
  EXPECT_NE(std::string(missing.status().message()).find("layer 1: placement: expert 3 has no slot"),
            std::string::npos)
      << missing.status();
  EXPECT_FALSE(ExpertPlacement::FromJson(R"({"num_ranks":3,"phy2log":[[0,1,2,3],[0,1,2,3]]})",
                                         moe, 4).ok());
  EXPECT_FALSE(ExpertPlacement::FromJson(R"({"num_ranks":2,"phy2log":[[0,1,2,9],[0,1,2,3]]})",
                                         moe, 4).ok());
  EXPECT_FALSE(ExpertPlacement::FromJson(R"({"phy2log":[]})", moe, 4).ok());
}

}  // namespace
}  // namespace epinfer
