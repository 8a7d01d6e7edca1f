#include "worker/kernels/weight_arena.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

// Allocations are zeroed, 64-byte aligned, disjoint, and keep their contents across chunks and a
// move of the arena; one larger than a chunk gets a chunk of its own.
TEST(WeightArenaTest, AllocationsAreZeroedAlignedDisjointAndSurviveMoves) {
  WeightArena arena;
  const size_t sizes[] = {1, 63, 64, 100, 4096, 3 << 20, WeightArena::kChunkBytes + 5, 17};
  std::vector<std::pair<uint8_t*, size_t>> blocks;
  for (size_t i = 0; i < std::size(sizes); ++i) {
    uint8_t* p = arena.Allocate(sizes[i]);
    ASSERT_NE(p, nullptr) << sizes[i];
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u) << sizes[i];
    for (size_t b = 0; b < sizes[i]; b += 4093) ASSERT_EQ(p[b], 0) << sizes[i] << " " << b;
    ASSERT_EQ(p[sizes[i] - 1], 0);
    std::memset(p, static_cast<int>(i + 1), sizes[i]);
    blocks.emplace_back(p, sizes[i]);
  }
  size_t total = 0;
  for (const auto& [p, size] : blocks) total += size;
  EXPECT_GE(arena.allocated(), total);
  WeightArena moved = std::move(arena);
  EXPECT_EQ(arena.allocated(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto& [p, size] = blocks[i];
    for (size_t b = 0; b < size; b += 4093) ASSERT_EQ(p[b], i + 1) << i;
    ASSERT_EQ(p[size - 1], i + 1) << i;
  }
  // Disjoint: sorted by address, each block ends before the next starts.
  std::sort(blocks.begin(), blocks.end());
  for (size_t i = 1; i < blocks.size(); ++i) {
    EXPECT_LE(blocks[i - 1].first + blocks[i - 1].second, blocks[i].first);
  }
}

// A request no system can map answers nullptr, sizes that would wrap in the rounding included,
// and the arena still serves the next request.
TEST(WeightArenaTest, ImpossibleRequestsAnswerNullAndLeaveTheArenaUsable) {
  WeightArena arena;
  ASSERT_NE(arena.Allocate(64), nullptr);  // a chunk with room left, which a wrapped size would fit
  EXPECT_EQ(arena.Allocate(size_t{1} << 62), nullptr);
  EXPECT_EQ(arena.Allocate(std::numeric_limits<size_t>::max()), nullptr);
  EXPECT_EQ(arena.Allocate(std::numeric_limits<size_t>::max() - 10), nullptr);
  EXPECT_EQ(arena.allocated(), 64u);
  uint8_t* p = arena.Allocate(100);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p[99], 0);
}

}  // namespace
}  // namespace epinfer
