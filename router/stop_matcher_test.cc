#include "router/stop_matcher.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

TEST(StopMatcherTest, HoldsBackPossiblePrefixesAndCutsAtTheMatch) {
  StopMatcher m({"END", "xyz"});
  auto a = m.Push("hello E");
  EXPECT_EQ(a.emit, "hello ");  // "E" might start "END"
  EXPECT_FALSE(a.matched);
  auto b = m.Push("N");
  EXPECT_EQ(b.emit, "");
  auto c = m.Push("Dtrailing");
  EXPECT_EQ(c.emit, "");
  EXPECT_EQ(c.matched, "END");
  EXPECT_EQ(m.Push("more").emit, "");  // nothing after a match
  EXPECT_EQ(m.Finish(), "");
}

TEST(StopMatcherTest, ReleasesHeldTextWhenItStopsLookingLikeAStop) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("aE").emit, "a");
  EXPECT_EQ(m.Push("Nx").emit, "ENx");
  EXPECT_EQ(m.Push("E").emit, "");
  EXPECT_EQ(m.Finish(), "E");
}

TEST(StopMatcherTest, EarliestOfSeveralStopsWins) {
  StopMatcher m({"bb", "ab"});
  auto r = m.Push("xabb");
  EXPECT_EQ(r.matched, "ab");
  EXPECT_EQ(r.emit, "x");
}

TEST(StopMatcherTest, WithoutStopsEverythingPassesThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("abc").emit, "abc");
  EXPECT_EQ(m.Finish(), "");
}

}  // namespace
}  // namespace epinfer
