#include "worker/kv/kv_cache.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

KvCache MakeCache(int64_t blocks) {
  auto cache = KvCache::Create({.num_layers = 2, .dim = 3, .block_size_tokens = 4,
                                .num_blocks = blocks});
  EXPECT_TRUE(cache.ok());
  return *std::move(cache);
}

TEST(KvCacheTest, BudgetDividesByBlockBytes) {
  // 61 layers × 576 values × 16 tokens × 4 bytes = 2,248,704 bytes per block.
  EXPECT_EQ(KvCache::BlocksForBudget(10 * 2248704 + 5, 61, 576, 16), 10);
  EXPECT_EQ(KvCache::BlocksForBudget(100, 61, 576, 16), 0);
}

TEST(KvCacheTest, ReserveIsAllOrNothingAndReleaseReturnsBlocks) {
  KvCache cache = MakeCache(3);
  KvBlockTable a, b;
  ASSERT_TRUE(cache.Reserve(a, 5).ok());  // 2 blocks
  EXPECT_EQ(a.blocks.size(), 2u);
  EXPECT_EQ(cache.free_blocks(), 1);
  absl::Status full = cache.Reserve(b, 8);  // needs 2, 1 free
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(cache.free_blocks(), 1);
  ASSERT_TRUE(cache.Reserve(a, 8).ok());  // still 2 blocks
  EXPECT_EQ(cache.free_blocks(), 1);
  cache.Release(a);
  EXPECT_TRUE(a.blocks.empty());
  EXPECT_EQ(cache.free_blocks(), 3);
  EXPECT_TRUE(cache.Reserve(b, 12).ok());
}

TEST(KvCacheTest, PositionsOfDifferentSequencesAndLayersDoNotAlias) {
  KvCache cache = MakeCache(4);
  KvBlockTable a, b;
  ASSERT_TRUE(cache.Reserve(a, 6).ok());
  ASSERT_TRUE(cache.Reserve(b, 6).ok());
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t p = 0; p < 6; ++p) {
      for (int i = 0; i < 3; ++i) {
        cache.At(a, layer, p)[i] = static_cast<float>(1000 * layer + 10 * p + i);
        cache.At(b, layer, p)[i] = -static_cast<float>(1000 * layer + 10 * p + i) - 1;
      }
    }
  }
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t p = 0; p < 6; ++p) {
      EXPECT_EQ(cache.At(a, layer, p)[2], 1000 * layer + 10 * p + 2);
      EXPECT_EQ(cache.At(b, layer, p)[0], -(1000 * layer + 10 * p) - 1);
    }
  }
}

TEST(KvCacheTest, RejectsNonPositiveShapes) {
  EXPECT_FALSE(KvCache::Create({.num_layers = 0, .dim = 3, .block_size_tokens = 4,
                                .num_blocks = 1}).ok());
}

}  // namespace
}  // namespace epinfer
