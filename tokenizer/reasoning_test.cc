#include "tokenizer/reasoning.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

ReasoningDelta Stream(const std::vector<std::string>& pieces, bool starts_in_reasoning) {
  ReasoningSplitter splitter(starts_in_reasoning);
  ReasoningDelta all;
  for (const std::string& piece : pieces) {
    ReasoningDelta d = splitter.Push(piece);
    all.reasoning += d.reasoning;
    all.content += d.content;
  }
  ReasoningDelta d = splitter.Finish();
  all.reasoning += d.reasoning;
  all.content += d.content;
  return all;
}

TEST(ReasoningSplitterTest, R1OutputStartsInsideThinkAndSplitsAtTheClosingTag) {
  ReasoningDelta d = ReasoningSplitter::Split("Let me think.\n</think>\n\nThe answer is 4.", true);
  EXPECT_EQ(d.reasoning, "Let me think.\n");
  EXPECT_EQ(d.content, "\n\nThe answer is 4.");
}

TEST(ReasoningSplitterTest, OutputThatOpensThinkItselfIsUnderstood) {
  ReasoningDelta d = ReasoningSplitter::Split("<think>hmm</think>yes", false);
  EXPECT_EQ(d.reasoning, "hmm");
  EXPECT_EQ(d.content, "yes");
}

TEST(ReasoningSplitterTest, WithoutThinkEverythingIsContent) {
  ReasoningDelta d = ReasoningSplitter::Split("Plain <b>answer</b> with </think> inside", false);
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "Plain <b>answer</b> with </think> inside");
}

TEST(ReasoningSplitterTest, UnfinishedReasoningStaysReasoning) {
  ReasoningDelta d = ReasoningSplitter::Split("still thinking </thi", true);
  EXPECT_EQ(d.reasoning, "still thinking </thi");
  EXPECT_EQ(d.content, "");
}

TEST(ReasoningSplitterTest, TagsSplitAcrossPiecesGiveTheSameResultAsOneString) {
  const std::string output = "<think>a<b</think>c</think>d";
  const ReasoningDelta whole = ReasoningSplitter::Split(output, false);
  EXPECT_EQ(whole.reasoning, "a<b");
  EXPECT_EQ(whole.content, "c</think>d");
  for (size_t cut = 0; cut <= output.size(); ++cut) {
    for (size_t cut2 = cut; cut2 <= output.size(); ++cut2) {
      ReasoningDelta d = Stream({output.substr(0, cut), output.substr(cut, cut2 - cut),
                                 output.substr(cut2)}, false);
      EXPECT_EQ(d.reasoning, whole.reasoning) << cut << "," << cut2;
      EXPECT_EQ(d.content, whole.content) << cut << "," << cut2;
    }
  }
}

TEST(ReasoningSplitterTest, ReasoningIsReleasedAsItArrivesExceptAPossibleTag) {
  ReasoningSplitter splitter(true);
  EXPECT_EQ(splitter.Push("abc").reasoning, "abc");
  ReasoningDelta d = splitter.Push("def</th");
  EXPECT_EQ(d.reasoning, "def");
  d = splitter.Push("ink>ghi");
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "ghi");
}

}  // namespace
}  // namespace epinfer
