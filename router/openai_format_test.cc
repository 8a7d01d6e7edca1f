#include "router/openai_format.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace epinfer {
namespace {

using Endpoint = OpenAiRequest::Endpoint;
using ::testing::HasSubstr;
using ::testing::StartsWith;

absl::StatusOr<OpenAiRequest> Completion(absl::string_view body) {
  return ParseOpenAiRequest(Endpoint::kCompletions, body);
}
absl::StatusOr<OpenAiRequest> Chat(absl::string_view body) {
  return ParseOpenAiRequest(Endpoint::kChatCompletions, body);
}

void ExpectBad(const absl::StatusOr<OpenAiRequest>& parsed, absl::string_view field) {
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), StartsWith(absl::StrCat(field, ": ")))
      << parsed.status();
}

TEST(ParseOpenAiRequestTest, CompletionFieldsMapOntoTheSamplingParams) {
  auto parsed = Completion(R"({"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0,
      "top_p": 0.5, "top_k": 3, "seed": 42, "stop": ["a", "b"], "logprobs": 2,
      "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::CompletionRequest& r = parsed->request;
  EXPECT_EQ(r.model(), "m");
  EXPECT_EQ(r.text(), "hi");
  EXPECT_EQ(r.sampling().max_tokens(), 7u);
  ASSERT_TRUE(r.sampling().has_temperature());
  EXPECT_EQ(r.sampling().temperature(), 0.0f);
  EXPECT_EQ(r.sampling().top_p(), 0.5f);
  EXPECT_EQ(r.sampling().top_k(), 3u);
  EXPECT_EQ(r.sampling().seed(), 42u);
  EXPECT_THAT(r.sampling().stop(), ::testing::ElementsAre("a", "b"));
  EXPECT_EQ(r.sampling().logprobs(), 2u);
  EXPECT_TRUE(r.sampling().ignore_eos());
  EXPECT_TRUE(parsed->stream);
  EXPECT_TRUE(parsed->include_usage);
}

TEST(ParseOpenAiRequestTest, UnsetFieldsStayUnsetSoTheServiceDefaultsApply) {
  auto parsed = Completion(R"({"prompt": "hi", "temperature": null, "stop": null})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->request.sampling().has_temperature());
  EXPECT_FALSE(parsed->request.sampling().has_seed());
  EXPECT_FALSE(parsed->request.sampling().has_logprobs());
  EXPECT_EQ(parsed->request.sampling().stop_size(), 0);
  EXPECT_FALSE(parsed->stream);
}

TEST(ParseOpenAiRequestTest, PromptIsTextOrTokenIdsIncludingTheSingleBatchForms) {
  auto ids = Completion(R"({"prompt": [3, 17, 42]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(ids->request.tokens().ids(), ::testing::ElementsAre(3, 17, 42));
  auto nested = Completion(R"({"prompt": [[5, 6]]})");
  ASSERT_TRUE(nested.ok()) << nested.status();
  EXPECT_THAT(nested->request.tokens().ids(), ::testing::ElementsAre(5, 6));
  auto listed = Completion(R"({"prompt": ["one"]})");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->request.text(), "one");
  ExpectBad(Completion(R"({"prompt": ["one", "two"]})"), "prompt");
  ExpectBad(Completion(R"({"prompt": [1, -2]})"), "prompt[1]");
  ExpectBad(Completion(R"({"prompt": [1, "x"]})"), "prompt[1]");
  ExpectBad(Completion(R"({"prompt": 5})"), "prompt");
  ExpectBad(Completion(R"({"max_tokens": 5})"), "prompt");
}

TEST(ParseOpenAiRequestTest, ChatMessagesKeepRolesAndJoinTextParts) {
  auto parsed = Chat(R"({"messages": [{"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "name": "x"}],
      "logprobs": true, "top_logprobs": 3, "max_completion_tokens": 9})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::ChatPrompt& chat = parsed->request.chat();
  ASSERT_EQ(chat.messages_size(), 3);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(1).content(), "a\nb");
  EXPECT_EQ(chat.messages(2).content(), "");
  EXPECT_EQ(parsed->request.sampling().logprobs(), 3u);
  EXPECT_EQ(parsed->request.sampling().max_tokens(), 9u);
}

TEST(ParseOpenAiRequestTest, WrongTypesNameTheirField) {
  ExpectBad(Completion(R"({"prompt": "x", "max_tokens": "7"})"), "max_tokens");
  ExpectBad(Completion(R"({"prompt": "x", "max_tokens": -1})"), "max_tokens");
  ExpectBad(Completion(R"({"prompt": "x", "max_tokens": 4294967296})"), "max_tokens");
  ExpectBad(Completion(R"({"prompt": "x", "temperature": "hot"})"), "temperature");
  ExpectBad(Completion(R"({"prompt": "x", "stream": 1})"), "stream");
  ExpectBad(Completion(R"({"prompt": "x", "stop": [1]})"), "stop[0]");
  ExpectBad(Completion(R"({"prompt": "x", "seed": 1.5})"), "seed");
  ExpectBad(Chat(R"({"messages": {"role": "user"}})"), "messages");
  ExpectBad(Chat(R"({"messages": [{"role": 1, "content": "x"}]})"), "messages[0].role");
  ExpectBad(Chat(R"({"messages": [{"content": "x"}]})"), "messages[0].role");
  ExpectBad(Chat(R"({"messages": [{"role": "user", "content": 3}]})"), "messages[0].content");
  ExpectBad(Chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
            "messages[0].content[0].type");
  ExpectBad(Chat(R"({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})"),
            "messages[0].tool_calls");
  ExpectBad(Chat(R"({"messages": [], "top_logprobs": 2})"), "top_logprobs");
  ExpectBad(Completion(R"({"prompt": "x", "include_usage": true})"), "include_usage");
  ExpectBad(Completion(R"({"prompt": "x", "stream_options": {"include_usage": true}})"),
            "stream_options");
}

TEST(ParseOpenAiRequestTest, UnsupportedFeaturesAreRefusedUnlessAtTheirDefault) {
  ASSERT_TRUE(Completion(R"({"prompt": "x", "n": 1, "echo": false, "presence_penalty": 0})").ok());
  ExpectBad(Completion(R"({"prompt": "x", "n": 2})"), "n");
  ExpectBad(Completion(R"({"prompt": "x", "echo": true})"), "echo");
  ExpectBad(Chat(R"({"messages": [], "frequency_penalty": 0.5})"), "frequency_penalty");
  ExpectBad(Chat(R"({"messages": [], "echo": false})"), "echo");  // not a chat field
  ExpectBad(Completion(R"({"prompt": "x", "max_token": 5})"), "max_token");
  ExpectBad(Completion(R"({"prompt": "x", "messages": []})"), "messages");
}

TEST(ParseOpenAiRequestTest, MalformedJsonAndInvalidUtf8NameWhereTheyBroke) {
  ExpectBad(Completion("{\"prompt\": \"x\""), "body");
  ExpectBad(Completion("[1, 2]"), "body");
  ExpectBad(Completion(""), "body");
  ExpectBad(Completion("{\"prompt\": \"a\xff\"}"), "prompt");
  ExpectBad(Chat("{\"messages\": [{\"role\": \"user\", \"content\": \"ok\"},"
                 " {\"role\": \"user\", \"content\": \"\xc3\x28\"}]}"),
            "messages[1].content");
  ExpectBad(Completion(R"({"prompt": "x", "stop": ["ok", "\ud800"]})"), "stop[1]");
  auto bad = Completion("{\"prompt\": \"a\xff\"}");
  // The message never echoes the invalid bytes back.
  EXPECT_EQ(std::string(bad.status().message()).find('\xff'), std::string::npos);
}

nlohmann::json ErrorOf(const absl::Status& status, Endpoint endpoint) {
  return nlohmann::json::parse(OpenAiErrorJson(status, endpoint))["error"];
}

TEST(OpenAiErrorJsonTest, RenamesProtoFieldsToTheOpenAiParam) {
  auto e = ErrorOf(absl::InvalidArgumentError("sampling.top_p: 1.5 is outside (0, 1]"),
                   Endpoint::kCompletions);
  EXPECT_EQ(e["param"], "top_p");
  EXPECT_EQ(e["message"], "top_p: 1.5 is outside (0, 1]");
  EXPECT_EQ(e["type"], "invalid_request_error");
  e = ErrorOf(absl::InvalidArgumentError("chat.messages[2].role: \"robot\" is not system"),
              Endpoint::kChatCompletions);
  EXPECT_EQ(e["param"], "messages[2].role");
  e = ErrorOf(absl::InvalidArgumentError("tokens.ids[1]: 600 is not below vocab_size 512"),
              Endpoint::kCompletions);
  EXPECT_EQ(e["param"], "prompt[1]");
  e = ErrorOf(absl::InvalidArgumentError("sampling.logprobs: 30 is outside [0, 20]"),
              Endpoint::kChatCompletions);
  EXPECT_EQ(e["param"], "top_logprobs");
  e = ErrorOf(absl::NotFoundError("model: \"gpt\" is not served here"), Endpoint::kCompletions);
  EXPECT_EQ(e["code"], "model_not_found");
  e = ErrorOf(absl::ResourceExhaustedError("server busy: 4 requests in flight"),
              Endpoint::kCompletions);
  EXPECT_TRUE(e["param"].is_null());
  EXPECT_EQ(e["message"], "server busy: 4 requests in flight");
  EXPECT_EQ(e["code"], "resource_exhausted");
  EXPECT_EQ(e["type"], "rate_limit_error");
  e = ErrorOf(absl::UnauthenticatedError("missing API key"), Endpoint::kCompletions);
  EXPECT_EQ(e["type"], "authentication_error");
}

TEST(HttpStatusOfTest, FollowsTheGrpcGatewayMapping) {
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInternal), 500);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnknown), 500);
}

OpenAiAnswerFormat Format(Endpoint endpoint) {
  OpenAiAnswerFormat format;
  format.endpoint = endpoint;
  format.model = "tiny";
  format.created_unix_s = 1700000000;
  return format;
}

v1::CompletionChunk Chunk(const std::string& text, std::vector<uint32_t> ids,
                          v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED) {
  v1::CompletionChunk chunk;
  chunk.set_request_id("req-1");
  chunk.set_text(text);
  for (uint32_t id : ids) chunk.add_token_ids(id);
  chunk.set_finish_reason(finish);
  if (finish != v1::FINISH_REASON_UNSPECIFIED) {
    chunk.mutable_usage()->set_prompt_tokens(3);
    chunk.mutable_usage()->set_completion_tokens(2);
  }
  return chunk;
}

// "data: {...}\n\n" events → their JSON payloads.
std::vector<nlohmann::json> Events(const std::string& sse) {
  std::vector<nlohmann::json> events;
  size_t at = 0;
  while (at < sse.size()) {
    EXPECT_EQ(sse.compare(at, 6, "data: "), 0) << sse.substr(at);
    const size_t end = sse.find("\n\n", at);
    if (end == std::string::npos) {
      ADD_FAILURE() << "unterminated event: " << sse.substr(at);
      break;
    }
    const std::string payload = sse.substr(at + 6, end - at - 6);
    events.push_back(payload == "[DONE]" ? nlohmann::json("[DONE]")
                                         : nlohmann::json::parse(payload));
    at = end + 2;
  }
  return events;
}

TEST(OpenAiAnswerFormatTest, UnaryChatCompletionHasOpenAisFieldsAndDeepSeeksReasoning) {
  v1::CompletionResponse response;
  response.set_request_id("req-7");
  response.set_text("Hi.");
  response.set_reasoning_content("The user greets.");
  response.add_token_ids(5);
  response.set_finish_reason(v1::FINISH_REASON_EOS);
  response.mutable_usage()->set_prompt_tokens(4);
  response.mutable_usage()->set_completion_tokens(1);
  OpenAiAnswerFormat format = Format(Endpoint::kChatCompletions);
  format.return_token_ids = true;
  auto answer = nlohmann::json::parse(format.Unary(response));
  EXPECT_EQ(answer["id"], "chatcmpl-req-7");
  EXPECT_EQ(answer["object"], "chat.completion");
  EXPECT_EQ(answer["created"], 1700000000);
  EXPECT_EQ(answer["model"], "tiny");
  ASSERT_EQ(answer["choices"].size(), 1u);
  const auto& choice = answer["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Hi.");
  EXPECT_EQ(choice["message"]["reasoning_content"], "The user greets.");
  EXPECT_TRUE(choice["logprobs"].is_null());
  EXPECT_EQ(choice["finish_reason"], "stop");  // eos is "stop" in OpenAI's terms
  EXPECT_EQ(choice["token_ids"], nlohmann::json({5}));
  EXPECT_EQ(answer["usage"],
            nlohmann::json({{"prompt_tokens", 4}, {"completion_tokens", 1}, {"total_tokens", 5}}));
}

TEST(OpenAiAnswerFormatTest, FinishReasonsMapToOpenAiNames) {
  const std::pair<v1::FinishReason, const char*> cases[] = {
      {v1::FINISH_REASON_STOP, "stop"},
      {v1::FINISH_REASON_EOS, "stop"},
      {v1::FINISH_REASON_LENGTH, "length"},
      {v1::FINISH_REASON_CANCELLED, "cancelled"}};
  for (const auto& [reason, name] : cases) {
    v1::CompletionResponse response;
    response.set_finish_reason(reason);
    auto answer = nlohmann::json::parse(Format(Endpoint::kCompletions).Unary(response));
    EXPECT_EQ(answer["choices"][0]["finish_reason"], name);
    EXPECT_EQ(answer["object"], "text_completion");
  }
}

TEST(OpenAiEventStreamTest, ChatStreamOpensWithTheRoleAndEndsWithUsageThenDone) {
  OpenAiEventStream stream(Format(Endpoint::kChatCompletions));
  std::string sse = stream.Render(Chunk("Hel", {1}));
  sse += stream.Render(Chunk("", {2}));  // held-back text: nothing to send
  sse += stream.Render(Chunk("lo", {}, v1::FINISH_REASON_LENGTH));
  sse += stream.End(absl::OkStatus());
  std::vector<nlohmann::json> events = Events(sse);
  ASSERT_EQ(events.size(), 3u) << sse;
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["id"], "chatcmpl-req-1");
  EXPECT_EQ(events[0]["choices"][0]["delta"],
            nlohmann::json({{"role", "assistant"}, {"content", "Hel"}}));
  EXPECT_TRUE(events[0]["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(events[0].contains("usage"));
  EXPECT_EQ(events[1]["choices"][0]["delta"], nlohmann::json({{"content", "lo"}}));
  EXPECT_EQ(events[1]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events[1]["usage"]["total_tokens"], 5);
  EXPECT_EQ(events[2], "[DONE]");
}

TEST(OpenAiEventStreamTest, IncludeUsageSendsUsageInAChunkWithoutChoices) {
  OpenAiAnswerFormat format = Format(Endpoint::kCompletions);
  format.include_usage = true;
  OpenAiEventStream stream(format);
  std::vector<nlohmann::json> events =
      Events(stream.Render(Chunk("a", {1})) +
             stream.Render(Chunk("b", {2}, v1::FINISH_REASON_STOP)) + stream.End(absl::OkStatus()));
  ASSERT_EQ(events.size(), 4u);
  EXPECT_TRUE(events[0]["usage"].is_null());
  EXPECT_EQ(events[1]["choices"][0]["text"], "b");
  EXPECT_TRUE(events[1]["usage"].is_null());
  EXPECT_EQ(events[2]["choices"], nlohmann::json::array());
  EXPECT_EQ(events[2]["usage"]["completion_tokens"], 2);
  EXPECT_EQ(events[3], "[DONE]");
}

TEST(OpenAiEventStreamTest, AnErrorAfterTheFirstTokenIsAnErrorEventBeforeDone) {
  OpenAiEventStream stream(Format(Endpoint::kCompletions));
  std::vector<nlohmann::json> events = Events(
      stream.End(absl::UnavailableError("worker worker-1 failed mid-request: socket closed")));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["error"]["type"], "server_error");
  EXPECT_EQ(events[0]["error"]["code"], "unavailable");
  EXPECT_EQ(events[1], "[DONE]");
}

TEST(OpenAiModelListTest, ListsModelsInOpenAisListFormat) {
  v1::ListModelsResponse models;
  models.add_models()->set_id("deepseek-r1");
  auto list = nlohmann::json::parse(OpenAiModelList(models));
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "deepseek-r1");
  EXPECT_EQ(list["data"][0]["object"], "model");
  EXPECT_TRUE(list["data"][0]["created"].is_number_integer());
  EXPECT_TRUE(list["data"][0]["owned_by"].is_string());
}

}  // namespace
}  // namespace epinfer
