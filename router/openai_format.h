#ifndef EPINFER_ROUTER_OPENAI_FORMAT_H_
#define EPINFER_ROUTER_OPENAI_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "epinfer/v1/completion.pb.h"

namespace epinfer {

// The OpenAI API's wire format (platform.openai.com/docs/api-reference/completions and /chat),
// translated to and from epinfer.v1: requests in, answers, stream chunks and errors out.

// An OpenAI request translated for Completions::Run, plus how the answer is to be rendered.
struct OpenAiRequest {
  enum class Endpoint { kCompletions, kChatCompletions };
  Endpoint endpoint = Endpoint::kCompletions;
  v1::CompletionRequest request;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage: usage in a final chunk of its own
  bool return_token_ids = false;  // vLLM's extension: choices carry "token_ids"
};

// Translates a /v1/completions or /v1/chat/completions JSON body. Only the JSON's shape is checked
// here (malformed JSON, wrong types, unknown or unsupported fields: INVALID_ARGUMENT naming the
// field in OpenAI's terms, "messages[1].content"); every bound is left to Completions::Run, so
// both APIs validate alike.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiRequest::Endpoint endpoint,
                                                 absl::string_view body);

// The HTTP status of a canonical code, as grpc-gateway maps them (INVALID_ARGUMENT 400,
// UNAUTHENTICATED 401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, ...).
int HttpStatusOf(absl::StatusCode code);

// {"error": {"message", "type", "param", "code"}} for a failed request; a message that starts
// with a field path of v1::CompletionRequest ("sampling.top_p: ...") is renamed to the OpenAI
// field ("top_p: ...") and that field becomes "param".
std::string OpenAiErrorJson(const absl::Status& status, OpenAiRequest::Endpoint endpoint);

// How one request's answer is written: OpenAI's text_completion / chat.completion objects.
struct OpenAiAnswerFormat {
  OpenAiRequest::Endpoint endpoint = OpenAiRequest::Endpoint::kCompletions;
  std::string model;
  int64_t created_unix_s = 0;
  bool logprobs = false;          // the request asked for logprobs
  bool return_token_ids = false;  // choices carry "token_ids"
  bool include_usage = false;     // stream: usage in a chunk of its own (OpenAI), not the last
  bool reasoning_model = false;   // chat messages carry reasoning_content even when empty

  std::string Unary(const v1::CompletionResponse& response) const;
};

// A streamed answer as Server-Sent Events ("data: {...}\n\n") in OpenAI's chunk format; the
// chat role comes with the first chunk, usage with the last (DeepSeek's API does the same).
class OpenAiEventStream {
 public:
  explicit OpenAiEventStream(OpenAiAnswerFormat format) : format_(std::move(format)) {}

  // The events of one chunk; "" for a chunk carrying nothing the client asked for (tokens whose
  // text the detokenizer or a stop string still holds back).
  std::string Render(const v1::CompletionChunk& chunk);
  // After the last chunk: an error event when `status` is not OK, then "data: [DONE]".
  std::string End(const absl::Status& status) const;

 private:
  const OpenAiAnswerFormat format_;
  bool first_ = true;
};

// GET /v1/models: {"object": "list", "data": [{"id", "object": "model", ...}]}.
std::string OpenAiModelList(const v1::ListModelsResponse& models);

}  // namespace epinfer

#endif  // EPINFER_ROUTER_OPENAI_FORMAT_H_
