#include "tokenizer/trainer.h"

#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tokenizer/tokenizer.h"

namespace epinfer {
namespace {

const char kCorpus[] =
    "the cat sat on the mat. the cat ate the rat. 猫が好きです。猫が好きです。\n"
    "def f(x):\n    return x + 1\n\ndef g(x):\n    return x * 2\n"
    "1234 5678 the the the";

TEST(TrainerTest, TrainedTokenizerLoadsAndRoundTrips) {
  auto trained = TrainByteLevelBpe(kCorpus, 400);
  ASSERT_TRUE(trained.ok()) << trained.status();
  auto tokenizer = Tokenizer::FromJson(trained->tokenizer_json, trained->tokenizer_config_json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_LE(trained->num_tokens, 400);
  EXPECT_EQ((*tokenizer)->id_limit(), trained->num_tokens);
  for (const std::string text : {std::string(kCorpus), std::string("unseen ñ 👍 text\t\n")}) {
    auto ids = (*tokenizer)->Encode(text);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*(*tokenizer)->Decode(*ids), text);
  }
  EXPECT_EQ((*tokenizer)->bos_id(), 0);
  EXPECT_EQ((*tokenizer)->eos_id(), 1);
  EXPECT_TRUE((*tokenizer)->SpecialTokenId("<think>").ok());
  EXPECT_TRUE((*tokenizer)->SpecialTokenId("<｜tool▁sep｜>").ok());
}

TEST(TrainerTest, FrequentWordsBecomeSingleTokens) {
  auto trained = TrainByteLevelBpe(kCorpus, 400);
  auto tokenizer = Tokenizer::FromJson(trained->tokenizer_json, "");
  EXPECT_EQ((*tokenizer)->Encode(" the")->size(), 1u);
  EXPECT_EQ((*tokenizer)->Encode(" cat")->size(), 1u);
}

TEST(TrainerTest, SmallestVocabularyHasNoMerges) {
  auto trained = TrainByteLevelBpe(kCorpus, 276);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->num_tokens, 276);
  auto tokenizer = Tokenizer::FromJson(trained->tokenizer_json, "");
  EXPECT_EQ((*tokenizer)->Encode("the")->size(), 3u);
}

TEST(TrainerTest, TrainingIsDeterministic) {
  EXPECT_EQ(TrainByteLevelBpe(kCorpus, 350)->tokenizer_json,
            TrainByteLevelBpe(kCorpus, 350)->tokenizer_json);
}

TEST(TrainerTest, BadArgumentsAreInvalidArgument) {
  EXPECT_EQ(TrainByteLevelBpe(kCorpus, 100).status().code(), absl::StatusCode::kInvalidArgument);
  auto bad = TrainByteLevelBpe("ok \xff", 300);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("byte offset 3"), absl::string_view::npos);
}

TEST(TrainerTest, WritesBothFilesIntoTheDirectory) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/model/tok";
  ASSERT_TRUE(TrainTokenizer(kCorpus, 300, dir).ok());
  auto tokenizer = Tokenizer::Load(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_FALSE((*tokenizer)->config().chat_template.empty());
  EXPECT_FALSE(TrainTokenizer(kCorpus, 300, "/proc/no/such/dir").ok());
}

}  // namespace
}  // namespace epinfer
