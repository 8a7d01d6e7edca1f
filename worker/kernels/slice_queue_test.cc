#include "worker/kernels/slice_queue.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

TEST(SliceQueueTest, OneThreadTakesItsRunInOrderThenTheOthersFromTheBack) {
  SliceQueue queue(3, 4);
  std::vector<int64_t> order;
  for (int64_t s = queue.Next(1); s >= 0; s = queue.Next(1)) order.push_back(s);
  // Its own run 4-7 front to back, then run 2 (8-11) and run 0 (0-3) from their backs.
  EXPECT_EQ(order, (std::vector<int64_t>{4, 5, 6, 7, 11, 10, 9, 8, 3, 2, 1, 0}));
  EXPECT_EQ(queue.Next(0), -1);
}

TEST(SliceQueueTest, EverySliceGoesOutExactlyOnceUnderContention) {
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t per_thread : {1, 7, 64}) {
      SliceQueue queue(threads, per_thread);
      // More callers than runs (ids wrap) and a bounded amount of work each.
      const int callers = threads + 2;
      std::vector<std::vector<int64_t>> taken(static_cast<size_t>(callers));
      std::vector<std::thread> pool;
      for (int c = 0; c < callers; ++c) {
        pool.emplace_back([&, c] {
          for (int64_t s = queue.Next(c); s >= 0; s = queue.Next(c)) taken[c].push_back(s);
        });
      }
      for (std::thread& t : pool) t.join();
      std::vector<int> count(static_cast<size_t>(threads * per_thread), 0);
      for (const auto& slices : taken) {
        for (int64_t s : slices) {
          ASSERT_GE(s, 0);
          ASSERT_LT(s, threads * per_thread);
          ++count[s];
        }
      }
      for (size_t s = 0; s < count.size(); ++s) {
        EXPECT_EQ(count[s], 1) << "slice " << s << " of " << threads << " x " << per_thread;
      }
    }
  }
}

TEST(SliceQueueTest, EmptyRunsHandOutNothing) {
  SliceQueue none(2, 0);
  EXPECT_EQ(none.Next(0), -1);
  SliceQueue no_threads(0, 3);  // treated as one run
  EXPECT_EQ(no_threads.Next(0), 0);
}

}  // namespace
}  // namespace epinfer
