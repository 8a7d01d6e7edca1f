#include "bench/serving_stats.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

// Golden values are worked by hand with numpy.percentile's linear rule:
// rank = q / 100 · (n − 1), interpolated between the neighbouring sorted values.

TEST(PercentileTest, InterpolatesLinearlyBetweenRanksLikeNumpy) {
  const std::vector<double> values = {4, 1, 3, 2};  // sorted 1 2 3 4
  EXPECT_DOUBLE_EQ(Percentile(values, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(values, 50), 2.5);   // rank 1.5
  EXPECT_DOUBLE_EQ(Percentile(values, 90), 3.7);   // rank 2.7
  EXPECT_DOUBLE_EQ(Percentile(values, 99), 3.97);  // rank 2.97
  EXPECT_DOUBLE_EQ(Percentile(values, 100), 4);
}

TEST(PercentileTest, HitsExactRanksAndHandlesTinyInputs) {
  std::vector<double> hundred_and_one;
  for (int i = 0; i <= 100; ++i) hundred_and_one.push_back(100 - i);
  EXPECT_DOUBLE_EQ(Percentile(hundred_and_one, 99), 99);
  EXPECT_DOUBLE_EQ(Percentile(hundred_and_one, 50), 50);
  const std::vector<double> tens = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
  EXPECT_DOUBLE_EQ(Percentile(tens, 90), 91);  // rank 8.1
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
}

RequestRecord Ok(int64_t prompt, int64_t output, double ttft, double latency,
                 std::vector<double> itl) {
  RequestRecord r;
  r.prompt_tokens = prompt;
  r.output_tokens = output;
  r.ttft_s = ttft;
  r.latency_s = latency;
  r.itl_s = std::move(itl);
  return r;
}

RequestRecord Failed(const std::string& message, int64_t prompt, int64_t output) {
  RequestRecord r;
  r.status = absl::UnavailableError(message);
  r.prompt_tokens = prompt;
  r.output_tokens = output;
  r.ttft_s = 0.05;
  r.latency_s = 9;
  return r;
}

TEST(SummarizeTest, ThroughputCountsOnlyCompletedRequestsOverTheWallTime) {
  const std::vector<RequestRecord> records = {
      Ok(10, 4, 0.1, 0.4, {0.1, 0.1, 0.1}),
      Ok(20, 2, 0.3, 0.5, {0.2}),
      Failed("worker died", 30, 1),
      Ok(5, 1, 0.2, 0.2, {}),
  };
  const ServingSummary s = Summarize(records, 2.0);
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.input_tokens, 35);  // 10 + 20 + 5
  EXPECT_EQ(s.output_tokens, 7);  // 4 + 2 + 1
  EXPECT_DOUBLE_EQ(s.duration_s, 2.0);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.input_throughput, 17.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 3.5);
  ASSERT_EQ(s.errors.size(), 1u);
  EXPECT_EQ(s.errors[0], "UNAVAILABLE: worker died");
}

TEST(SummarizeTest, LatencyPercentilesInMillisecondsOverCompletedRequests) {
  const std::vector<RequestRecord> records = {
      Ok(10, 4, 0.1, 0.4, {0.1, 0.1, 0.1}),
      Ok(20, 2, 0.3, 0.5, {0.2}),
      Failed("worker died", 30, 1),
      Ok(5, 1, 0.2, 0.2, {}),
  };
  const ServingSummary s = Summarize(records, 2.0);
  // TTFT {0.1, 0.3, 0.2} s.
  EXPECT_EQ(s.ttft.samples, 3);
  EXPECT_NEAR(s.ttft.mean_ms, 200, 1e-9);
  EXPECT_NEAR(s.ttft.p50_ms, 200, 1e-9);
  EXPECT_NEAR(s.ttft.p90_ms, 280, 1e-9);  // rank 1.8: 0.2 + 0.8 · 0.1
  EXPECT_NEAR(s.ttft.p99_ms, 298, 1e-9);
  // TPOT: (0.4 − 0.1) / 3 = 0.1 and (0.5 − 0.3) / 1 = 0.2; a 1-token answer has none.
  EXPECT_EQ(s.tpot.samples, 2);
  EXPECT_NEAR(s.tpot.mean_ms, 150, 1e-9);
  EXPECT_NEAR(s.tpot.p50_ms, 150, 1e-9);
  EXPECT_NEAR(s.tpot.p90_ms, 190, 1e-9);
  EXPECT_NEAR(s.tpot.p99_ms, 199, 1e-9);
  // ITL: every gap of every completed request, {0.1, 0.1, 0.1, 0.2}.
  EXPECT_EQ(s.itl.samples, 4);
  EXPECT_NEAR(s.itl.mean_ms, 125, 1e-9);
  EXPECT_NEAR(s.itl.p50_ms, 100, 1e-9);
  EXPECT_NEAR(s.itl.p90_ms, 170, 1e-9);  // rank 2.7
  EXPECT_NEAR(s.itl.p99_ms, 197, 1e-9);
  // End to end {0.4, 0.5, 0.2}: the failed request's 9 s does not count.
  EXPECT_EQ(s.e2e.samples, 3);
  EXPECT_NEAR(s.e2e.mean_ms, 1100.0 / 3, 1e-9);
  EXPECT_NEAR(s.e2e.p50_ms, 400, 1e-9);
  EXPECT_NEAR(s.e2e.p90_ms, 480, 1e-9);
  EXPECT_NEAR(s.e2e.p99_ms, 498, 1e-9);
}

TEST(SummarizeTest, KeepsAFewDistinctErrors) {
  std::vector<RequestRecord> records;
  for (int i = 0; i < 3; ++i) records.push_back(Failed("same", 1, 0));
  for (int i = 0; i < 10; ++i) records.push_back(Failed("error " + std::to_string(i), 1, 0));
  const ServingSummary s = Summarize(records, 1.0);
  EXPECT_EQ(s.failed, 13);
  EXPECT_EQ(s.completed, 0);
  ASSERT_EQ(static_cast<int>(s.errors.size()), ServingSummary::kMaxErrors);
  EXPECT_EQ(s.errors[0], "UNAVAILABLE: same");
  EXPECT_EQ(s.errors[1], "UNAVAILABLE: error 0");
  EXPECT_EQ(s.output_throughput, 0);
  EXPECT_EQ(s.ttft.samples, 0);
  EXPECT_EQ(s.ttft.p99_ms, 0);
}

TEST(SummarizeTest, ZeroDurationGivesZeroThroughputNotInfinity) {
  const ServingSummary s = Summarize({Ok(3, 2, 0.1, 0.2, {0.1})}, 0);
  EXPECT_EQ(s.completed, 1);
  EXPECT_EQ(s.request_throughput, 0);
  EXPECT_EQ(s.output_throughput, 0);
}

}  // namespace
}  // namespace epinfer
