#include "router/validation.h"

#include "gtest/gtest.h"

namespace epinfer {
namespace {

const ModelLimits kLimits{512, 2560};

v1::CompletionRequest Text(const std::string& text) {
  v1::CompletionRequest r;
  r.set_text(text);
  return r;
}

void ExpectBad(const v1::CompletionRequest& r, const std::string& field) {
  absl::Status s = ValidateCompletionRequest(r, kLimits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_EQ(std::string(s.message()).rfind(field, 0), 0u) << s;
}

TEST(ValidationTest, AcceptsEachPromptForm) {
  EXPECT_TRUE(ValidateCompletionRequest(Text("hello"), kLimits).ok());
  v1::CompletionRequest tokens;
  tokens.mutable_tokens()->add_ids(5);
  EXPECT_TRUE(ValidateCompletionRequest(tokens, kLimits).ok());
  v1::CompletionRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  EXPECT_TRUE(ValidateCompletionRequest(chat, kLimits).ok());
}

TEST(ValidationTest, EveryBadFieldIsNamed) {
  ExpectBad(v1::CompletionRequest(), "prompt");
  ExpectBad(Text(""), "text");
  ExpectBad(Text(std::string("ab\xff", 3)), "text");
  ExpectBad(Text(std::string("\xc0\xaf")), "text");          // overlong '/'
  ExpectBad(Text(std::string("\xed\xa0\x80")), "text");      // a surrogate
  v1::CompletionRequest r = Text("x");
  r.mutable_sampling()->set_temperature(2.5f);
  ExpectBad(r, "sampling.temperature");
  r = Text("x");
  r.mutable_sampling()->set_top_p(0.0f);
  ExpectBad(r, "sampling.top_p");
  r = Text("x");
  r.mutable_sampling()->set_top_k(513);
  ExpectBad(r, "sampling.top_k");
  r = Text("x");
  r.mutable_sampling()->set_logprobs(21);
  ExpectBad(r, "sampling.logprobs");
  r = Text("x");
  r.mutable_sampling()->set_max_tokens(3000);
  ExpectBad(r, "sampling.max_tokens");
  r = Text("x");
  r.mutable_sampling()->add_stop("");
  ExpectBad(r, "sampling.stop[0]");
  r = Text("x");
  r.mutable_sampling()->add_stop_token_ids(512);
  ExpectBad(r, "sampling.stop_token_ids[0]");
  r = Text("x");
  r.set_request_id("has space");
  ExpectBad(r, "request_id");
  v1::CompletionRequest tokens;
  tokens.mutable_tokens()->add_ids(1);
  tokens.mutable_tokens()->add_ids(600);
  ExpectBad(tokens, "tokens.ids[1]");
  v1::CompletionRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("wizard");
  ExpectBad(chat, "chat.messages[0].role");
  m->set_role("user");
  auto* s = chat.mutable_chat()->add_messages();
  s->set_role("system");
  ExpectBad(chat, "chat.messages[1].role");
}

TEST(ValidationTest, MaxTokensDefaultsAndMustFitTheContext) {
  v1::CompletionRequest r = Text("x");
  EXPECT_EQ(*ResolveMaxTokens(r, 10, kLimits), 256);
  EXPECT_EQ(*ResolveMaxTokens(r, 2500, kLimits), 60);
  r.mutable_sampling()->set_max_tokens(100);
  EXPECT_EQ(*ResolveMaxTokens(r, 10, kLimits), 100);
  auto over = ResolveMaxTokens(r, 2500, kLimits);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(over.status().message()).find("context length 2560"), std::string::npos);
  EXPECT_FALSE(ResolveMaxTokens(r, 2560, kLimits).ok());
}

}  // namespace
}  // namespace epinfer
