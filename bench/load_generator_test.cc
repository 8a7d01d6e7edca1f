#include "bench/load_generator.h"

#include <algorithm>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace epinfer {
namespace {

WorkloadOptions Options(int64_t n, int64_t input, int64_t output, double range, uint64_t seed) {
  WorkloadOptions o;
  o.num_requests = n;
  o.input_len = input;
  o.output_len = output;
  o.range_ratio = range;
  o.vocab_size = 1000;
  o.seed = seed;
  return o;
}

TEST(MakeWorkloadTest, SameSeedSameWorkloadOtherSeedAnother) {
  auto a = MakeWorkload(Options(20, 64, 32, 0.5, 7));
  auto b = MakeWorkload(Options(20, 64, 32, 0.5, 7));
  auto c = MakeWorkload(Options(20, 64, 32, 0.5, 8));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].prompt, (*b)[i].prompt);
    EXPECT_EQ((*a)[i].output_tokens, (*b)[i].output_tokens);
  }
  EXPECT_NE((*a)[0].prompt, (*c)[0].prompt);
}

TEST(MakeWorkloadTest, LengthsSpanTheRangeRatioAndIdsStayInTheVocabulary) {
  auto w = MakeWorkload(Options(2000, 100, 50, 0.2, 1));
  ASSERT_TRUE(w.ok()) << w.status();
  size_t in_min = 1 << 30, in_max = 0;
  int64_t out_min = 1 << 30, out_max = 0;
  for (const BenchRequest& r : *w) {
    in_min = std::min(in_min, r.prompt.size());
    in_max = std::max(in_max, r.prompt.size());
    out_min = std::min(out_min, r.output_tokens);
    out_max = std::max(out_max, r.output_tokens);
    for (uint32_t id : r.prompt) ASSERT_LT(id, 1000u);
  }
  // [100 · 0.8, 100 · 1.2] and [50 · 0.8, 50 · 1.2], both ends reached in 2000 draws.
  EXPECT_EQ(in_min, 80u);
  EXPECT_EQ(in_max, 120u);
  EXPECT_EQ(out_min, 40);
  EXPECT_EQ(out_max, 60);
}

TEST(MakeWorkloadTest, RangeZeroGivesExactLengths) {
  auto w = MakeWorkload(Options(10, 7, 3, 0, 1));
  ASSERT_TRUE(w.ok());
  for (const BenchRequest& r : *w) {
    EXPECT_EQ(r.prompt.size(), 7u);
    EXPECT_EQ(r.output_tokens, 3);
  }
}

TEST(MakeWorkloadTest, BadOptionsNameTheFlag) {
  auto ratio = MakeWorkload(Options(1, 8, 8, 1.0, 0));
  EXPECT_EQ(ratio.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ratio.status().message().find("--range_ratio"), absl::string_view::npos);
  auto input = MakeWorkload(Options(1, 0, 8, 0, 0));
  EXPECT_NE(input.status().message().find("--input_len"), absl::string_view::npos);
  auto count = MakeWorkload(Options(0, 8, 8, 0, 0));
  EXPECT_NE(count.status().message().find("--num_requests"), absl::string_view::npos);
}

TEST(PoissonArrivalsTest, GapsAverageTheInverseRate) {
  const std::vector<double> at = PoissonArrivals(20000, 50.0, 3);
  EXPECT_EQ(at.front(), 0);
  EXPECT_TRUE(std::is_sorted(at.begin(), at.end()));
  const double mean_gap = at.back() / (at.size() - 1);
  EXPECT_NEAR(mean_gap, 1 / 50.0, 0.02 / 50.0 * 3);  // σ/√n ≈ 0.7 % of the mean; 6 % allowed
}

TEST(PoissonArrivalsTest, InfiniteRateSendsEverythingAtTheStart) {
  const std::vector<double> at = PoissonArrivals(5, std::numeric_limits<double>::infinity(), 0);
  EXPECT_EQ(at, std::vector<double>(5, 0.0));
}

// Answers after `work`, recording how many requests were in flight at once.
class FakeTarget : public CompletionTarget {
 public:
  explicit FakeTarget(absl::Duration work) : work_(work) {}

  RequestRecord Send(const BenchRequest& request, int64_t index, absl::Time deadline) override {
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
      most_in_flight_ = std::max(most_in_flight_, in_flight_);
      sent_.push_back(index);
    }
    absl::SleepFor(work_);
    absl::MutexLock lock(&mu_);
    --in_flight_;
    RequestRecord r;
    r.prompt_tokens = static_cast<int64_t>(request.prompt.size());
    r.output_tokens = index;  // lets the test check the records' order
    if (deadline < absl::Now()) r.status = absl::DeadlineExceededError("late");
    return r;
  }

  int most_in_flight() {
    absl::MutexLock lock(&mu_);
    return most_in_flight_;
  }
  std::vector<int64_t> sent() {
    absl::MutexLock lock(&mu_);
    return sent_;
  }

 private:
  const absl::Duration work_;
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int most_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> sent_ ABSL_GUARDED_BY(mu_);
};

TEST(RunLoadTest, ConcurrencyCapsRequestsInFlightAndEachIsSentOnce) {
  auto w = MakeWorkload(Options(24, 4, 4, 0, 0));
  ASSERT_TRUE(w.ok());
  FakeTarget target(absl::Milliseconds(20));
  LoadOptions options;
  options.concurrency = 4;
  const LoadResult result = RunLoad(*w, options, target);
  EXPECT_EQ(target.most_in_flight(), 4);
  std::vector<int64_t> sent = target.sent();
  std::sort(sent.begin(), sent.end());
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(sent[i], i);
  ASSERT_EQ(result.records.size(), 24u);
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(result.records[i].output_tokens, i);
  // 24 requests, 4 at a time, 20 ms each: at least 6 rounds.
  EXPECT_GE(result.duration_s, 0.12);
}

TEST(RunLoadTest, RequestRateDelaysSendsToTheirArrivalTimes) {
  auto w = MakeWorkload(Options(10, 4, 4, 0, 0));
  ASSERT_TRUE(w.ok());
  FakeTarget target(absl::ZeroDuration());
  LoadOptions options;
  options.request_rate = 100;
  options.seed = 5;
  const LoadResult result = RunLoad(*w, options, target);
  EXPECT_GE(result.duration_s, PoissonArrivals(10, 100, 5).back());
  EXPECT_EQ(target.sent().size(), 10u);
}

}  // namespace
}  // namespace epinfer
