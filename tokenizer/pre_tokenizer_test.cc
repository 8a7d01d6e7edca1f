#include "tokenizer/pre_tokenizer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace epinfer {
namespace {

// DeepSeek-V3's main split regex (tokenizer.json pre_tokenizer.pretokenizers[2]).
constexpr char kDeepSeekRegex[] =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}"
    "\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

std::vector<std::string> Split(const std::string& pattern, const std::string& text) {
  auto splitter = RegexSplitter::Create(pattern);
  EXPECT_TRUE(splitter.ok()) << splitter.status();
  std::vector<absl::string_view> pieces;
  (*splitter)->SplitIsolated(text, &pieces);
  return std::vector<std::string>(pieces.begin(), pieces.end());
}

using Pieces = std::vector<std::string>;

// Expected pieces: @huggingface/transformers' pre_tokenizer on the same text.
TEST(RegexSplitterTest, WhitespaceRunLeavesItsLastSpaceToTheNextWord) {
  EXPECT_EQ(Split(kDeepSeekRegex, "a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(Split(kDeepSeekRegex, "hello  world"), (Pieces{"hello", " ", " world"}));
  EXPECT_EQ(Split(kDeepSeekRegex, "\n\n  x"), (Pieces{"\n\n", " ", " x"}));
}

TEST(RegexSplitterTest, WhitespaceRunAtTheEndStaysWhole) {
  EXPECT_EQ(Split(kDeepSeekRegex, "x   "), (Pieces{"x", "   "}));
}

TEST(RegexSplitterTest, UnicodeSpacesAreWhitespaceAsInTheReference) {
  EXPECT_EQ(Split(kDeepSeekRegex, "a\u3000\u3000b"), (Pieces{"a", "\u3000", "\u3000b"}));
}

TEST(RegexSplitterTest, UnmatchedTextBecomesItsOwnPiece) {
  EXPECT_EQ(Split("\\p{N}{1,3}", "ab12345c"), (Pieces{"ab", "123", "45", "c"}));
}

TEST(RegexSplitterTest, LookaroundOutsideTheIdiomIsUnimplemented) {
  auto splitter = RegexSplitter::Create("(?<=a)b");
  EXPECT_EQ(splitter.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(splitter.status().message().find("offset 0"), absl::string_view::npos);
}

TEST(RegexSplitterTest, BadRegexIsAnErrorNotACrash) {
  for (const char* pattern : {"(", "[a", "\\", "a{2,1}", "\\p{NoSuchClass}"}) {
    EXPECT_FALSE(RegexSplitter::Create(pattern).ok()) << pattern;
  }
}

TEST(TranslateHfRegexTest, SpellsWhiteSpaceAndDigitsForRe2) {
  auto translated = TranslateHfRegex("\\d+|[^\\s\\p{L}]");
  ASSERT_TRUE(translated.ok());
  EXPECT_EQ(translated->pattern.find("\\s"), std::string::npos);
  EXPECT_NE(translated->pattern.find("\\p{Nd}+"), std::string::npos);
  EXPECT_FALSE(translated->whitespace_lookahead);
}

TEST(PreTokenizerTest, ByteLevelWithPrefixSpaceAndGpt2Regex) {
  auto pre = PreTokenizer::FromJson(nlohmann::json::parse(
      R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})"));
  ASSERT_TRUE(pre.ok()) << pre.status();
  PreTokenizedText out;
  (*pre)->Split("Hello world's", &out);
  EXPECT_EQ(std::vector<std::string>(out.pieces.begin(), out.pieces.end()),
            (Pieces{" Hello", " world", "'s"}));
}

TEST(PreTokenizerTest, UnknownStepIsUnimplementedNamingIt) {
  auto pre = PreTokenizer::FromJson(nlohmann::json::parse(
      R"({"type": "Sequence", "pretokenizers": [{"type": "Metaspace"}]})"));
  EXPECT_EQ(pre.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(pre.status().message().find("pre_tokenizer.pretokenizers[0]"),
            absl::string_view::npos);
}

}  // namespace
}  // namespace epinfer
