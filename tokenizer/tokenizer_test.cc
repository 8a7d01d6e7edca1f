#include "tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tokenizer/stream_decoder.h"

namespace epinfer {
namespace {

using Ids = std::vector<int32_t>;

// testdata/tiny_tokenizer.json: the 256 bytes as ids 0-255, eleven merges, DeepSeek-V3's
// pre-tokenizer, <｜User｜> (300, not special) and <｜end▁of▁sentence｜> (301, special). Expected
// ids and texts below are what @huggingface/transformers 4.3.2 gives for the same file.
std::string TinyJson() {
  std::ifstream in("tokenizer/testdata/tiny_tokenizer.json");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = Tokenizer::FromJson(TinyJson(), "");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = std::move(*loaded);
  }
  Ids Encode(const std::string& text, bool allow_special = false) {
    EncodeOptions options;
    options.allow_special_tokens = allow_special;
    auto ids = tokenizer_->Encode(text, options);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : Ids{};
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(TokenizerTest, EncodeMatchesTheReference) {
  EXPECT_EQ(Encode("hello world"), (Ids{259, 264}));
  EXPECT_EQ(Encode("hello  world"), (Ids{259, 32, 264}));
  EXPECT_EQ(Encode("a   b"), (Ids{97, 266, 32, 98}));
  EXPECT_EQ(Encode("你好"), (Ids{265, 160, 229, 165, 189}));
  EXPECT_EQ(Encode("12345 hello\n\n  x"), (Ids{49, 50, 51, 52, 53, 32, 259, 10, 10, 32, 32, 120}));
  EXPECT_EQ(Encode(""), Ids{});
}

TEST_F(TokenizerTest, AddedTokensAreRecognisedOnlyWhenAsked) {
  const std::string text = "hi<｜User｜>hello<｜end▁of▁sentence｜>";
  EXPECT_EQ(Encode(text, /*allow_special=*/true), (Ids{104, 105, 300, 259, 301}));
  const Ids as_text = Encode(text);
  EXPECT_EQ(as_text.size(), 42u);
  EXPECT_EQ(as_text.front(), 104);
  for (int32_t id : as_text) EXPECT_LT(id, 300);
}

TEST_F(TokenizerTest, InvalidUtf8IsInvalidArgumentWithItsOffset) {
  auto ids = tokenizer_->Encode("hello \xc3\x28");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ids.status().message(), "text: invalid UTF-8 at byte offset 6");
}

TEST_F(TokenizerTest, OverLongInputIsInvalidArgument) {
  EncodeOptions options;
  options.max_tokens = 10;
  auto ids = tokenizer_->Encode(std::string(1000, 'x'), options);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("limit of 10 tokens"), absl::string_view::npos);
}

TEST_F(TokenizerTest, DecodeMatchesTheReferenceForBrokenUtf8AndSpecialTokens) {
  EXPECT_EQ(*tokenizer_->Decode({104, 228, 189, 160, 301, 228, 189}),
            "h你<｜end▁of▁sentence｜>\xef\xbf\xbd");
  // Skipped special tokens do not cut the bytes around them: E4 BD is one unfinished character.
  EXPECT_EQ(*tokenizer_->Decode({104, 228, 301, 189}, /*skip_special_tokens=*/true),
            "h\xef\xbf\xbd");
}

TEST_F(TokenizerTest, DecodeOfUnknownIdNamesItsIndex) {
  auto text = tokenizer_->Decode({104, 290});
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("ids[1]: token id 290"), absl::string_view::npos);
  EXPECT_FALSE(tokenizer_->Decode({-1}).ok());
}

TEST_F(TokenizerTest, UnknownSpecialTokenIsNotFound) {
  EXPECT_EQ(*tokenizer_->SpecialTokenId("<｜User｜>"), 300);
  EXPECT_EQ(tokenizer_->SpecialTokenId("<｜Nobody｜>").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(TokenizerTest, StreamingHoldsBytesUntilACharacterCompletes) {
  StreamDecoder stream(*tokenizer_);
  // "h", then 你 (E4 BD A0) one byte token at a time, then the special token.
  EXPECT_EQ(*stream.Push(104), "h");
  EXPECT_EQ(*stream.Push(228), "");
  EXPECT_EQ(*stream.Push(189), "");
  EXPECT_EQ(*stream.Push(160), "你");
  EXPECT_EQ(*stream.Push(228), "");
  EXPECT_EQ(*stream.Push(301), "\xef\xbf\xbd<｜end▁of▁sentence｜>");
  EXPECT_EQ(*stream.Push(228), "");
  EXPECT_EQ(stream.Finish(), "\xef\xbf\xbd");
  EXPECT_FALSE(stream.Push(12345).ok());
}

TEST_F(TokenizerTest, StreamedPiecesJoinToTheWholeDecode) {
  const Ids ids = Encode("hello 你好 world 👍🏽 done", true);
  StreamDecoder stream(*tokenizer_);
  std::string joined;
  for (int32_t id : ids) joined += *stream.Push(id);
  joined += stream.Finish();
  EXPECT_EQ(joined, *tokenizer_->Decode(ids));
  EXPECT_EQ(joined, "hello 你好 world 👍🏽 done");
}

TEST(TokenizerLoadTest, MergesAsPairsEqualMergesAsStrings) {
  const std::string json = TinyJson();
  nlohmann::json rewritten = nlohmann::json::parse(json);
  for (nlohmann::json& merge : rewritten["model"]["merges"]) {
    const std::string text = merge.get<std::string>();
    const size_t space = text.find(' ');
    merge = nlohmann::json::array({text.substr(0, space), text.substr(space + 1)});
  }
  auto strings = Tokenizer::FromJson(json, "");
  auto pairs = Tokenizer::FromJson(rewritten.dump(), "");
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  EXPECT_EQ(*(*pairs)->Encode("hello world, hell"), *(*strings)->Encode("hello world, hell"));
  EXPECT_EQ(*(*pairs)->Encode("hello world"), (Ids{259, 264}));
}

TEST(TokenizerLoadTest, MalformedFilesAreErrorsNamingTheField) {
  const std::string good = TinyJson();
  struct Case {
    std::string json;
    std::string message;
  };
  const Case cases[] = {
      {"", "tokenizer.json"},
      {"[1, 2]", "expected an object"},
      {good.substr(0, good.size() / 2), "tokenizer.json"},
      {R"j({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},
           "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}})j",
       "merges[0]"},
      {R"j({"model": {"type": "BPE", "vocab": {"a": -4}, "merges": []}})j", "vocab[\"a\"]"},
      {R"j({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})j", "vocab[\"a\"]"},
      {R"j({"model": {"type": "Unigram", "vocab": []}})j", "model.type"},
      {R"j({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}})j", "merges[0]"},
      {R"j({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
           "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"},
           "added_tokens": [{"content": "x"}]})j",
       "added_tokens[0]"},
      {R"j({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
           "normalizer": {"type": "NFC"}})j",
       "normalizer"},
      {R"j({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
           "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?=x)"}}})j",
       "pre_tokenizer.pattern"},
  };
  for (const Case& c : cases) {
    auto tokenizer = Tokenizer::FromJson(c.json, "");
    ASSERT_FALSE(tokenizer.ok()) << c.json;
    EXPECT_NE(tokenizer.status().message().find(c.message), absl::string_view::npos)
        << tokenizer.status();
  }
  EXPECT_FALSE(Tokenizer::FromJson(good, "{not json").ok());
  EXPECT_FALSE(Tokenizer::FromJson(good, R"j({"bos_token": "<nope>"})j").ok());
  EXPECT_EQ(Tokenizer::Load("/nonexistent/tokenizer").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenizerLoadTest, TemplateProcessingAddsBosWhenSpecialTokensAreAdded) {
  std::string json = TinyJson();
  const std::string byte_level_post =
      R"j("post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})j";
  const size_t pos = json.find(byte_level_post);
  ASSERT_NE(pos, std::string::npos);
  json.replace(pos, byte_level_post.size(),
               R"j("post_processor": {"type": "TemplateProcessing", "single": [
                   {"SpecialToken": {"id": "<｜end▁of▁sentence｜>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}]})j");
  auto tokenizer = Tokenizer::FromJson(json, "");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EncodeOptions options;
  options.add_special_tokens = true;
  EXPECT_EQ(*(*tokenizer)->Encode("hello", options), (Ids{301, 259}));
  EXPECT_EQ(*(*tokenizer)->Encode("hello"), (Ids{259}));
}

}  // namespace
}  // namespace epinfer
