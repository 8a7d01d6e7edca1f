#include "router/openai_format.h"

#include <limits>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace epinfer {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using Endpoint = OpenAiRequest::Endpoint;

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// Tracks where a SAX parse is ("messages[1].content"), so that a syntax error or invalid UTF-8
// names the field it broke, as a type error does. Used only on bodies that failed to parse.
class JsonErrorLocator final : public nlohmann::json_sax<json> {
 public:
  bool null() override { return Scalar(); }
  bool boolean(bool) override { return Scalar(); }
  bool number_integer(number_integer_t) override { return Scalar(); }
  bool number_unsigned(number_unsigned_t) override { return Scalar(); }
  bool number_float(number_float_t, const string_t&) override { return Scalar(); }
  bool string(string_t&) override { return Scalar(); }
  bool binary(binary_t&) override { return Scalar(); }
  bool start_object(std::size_t) override { return Open(true); }
  bool start_array(std::size_t) override { return Open(false); }
  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }
  bool key(string_t& key) override {
    frames_.back().key = key;
    frames_.back().in_value = true;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& error) override {
    // "[json.exception.parse_error.101] parse error at line 1, column 9: syntax error while
    // parsing value - invalid string: ill-formed UTF-8 byte; last read: '"\xFF'": keep the
    // reason, drop the prefix and the raw bytes read.
    std::string reason = error.what();
    if (size_t colon = reason.find(": "); colon != std::string::npos) reason.erase(0, colon + 2);
    if (size_t last = reason.find("; last read"); last != std::string::npos) reason.erase(last);
    message_ = absl::StrCat(Path(), ": invalid JSON at byte ", position, ": ", reason);
    return false;
  }
  const std::string& message() const { return message_; }

 private:
  struct Frame {
    bool object;
    std::string key;
    int64_t index = -1;     // arrays: elements begun
    bool in_value = false;  // objects: after a key, before its value ended
  };
  void BeginValue() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
  }
  void EndValue() {
    if (!frames_.empty() && frames_.back().object) frames_.back().in_value = false;
  }
  bool Scalar() {
    BeginValue();
    EndValue();
    return true;
  }
  bool Open(bool object) {
    BeginValue();
    frames_.push_back({object, "", -1, false});
    return true;
  }
  bool Close() {
    frames_.pop_back();
    EndValue();
    return true;
  }
  // The innermost frame is where the parse stopped: in an array, at its next element.
  std::string Path() const {
    std::string path;
    for (size_t i = 0; i < frames_.size(); ++i) {
      const Frame& f = frames_[i];
      const bool innermost = i + 1 == frames_.size();
      if (f.object) {
        if (!f.in_value) break;
        absl::StrAppend(&path, path.empty() ? "" : ".", f.key);
      } else {
        absl::StrAppend(&path, "[", innermost ? f.index + 1 : f.index, "]");
      }
    }
    return path.empty() ? "body" : path;
  }

  std::vector<Frame> frames_;
  std::string message_;
};

std::string Describe(const json& value) { return absl::StrCat("a JSON ", value.type_name()); }

absl::StatusOr<bool> ReadBool(const json& value, const std::string& field) {
  if (!value.is_boolean())
    return Bad(field, absl::StrCat("must be true or false, not ", Describe(value)));
  return value.get<bool>();
}

absl::StatusOr<uint64_t> ReadUnsigned(const json& value, const std::string& field, uint64_t max) {
  if (value.is_number_unsigned()) {
    const uint64_t n = value.get<uint64_t>();
    if (n > max) return Bad(field, absl::StrCat(n, " is above ", max));
    return n;
  }
  if (value.is_number_integer()) {
    return Bad(field, absl::StrCat(value.get<int64_t>(), " is negative"));
  }
  return Bad(field, absl::StrCat("must be a non-negative integer, not ", Describe(value)));
}

absl::StatusOr<float> ReadNumber(const json& value, const std::string& field) {
  if (!value.is_number())
    return Bad(field, absl::StrCat("must be a number, not ", Describe(value)));
  return static_cast<float>(value.get<double>());
}

absl::StatusOr<std::string> ReadString(const json& value, const std::string& field) {
  if (!value.is_string())
    return Bad(field, absl::StrCat("must be a string, not ", Describe(value)));
  return value.get<std::string>();
}

// "stop": a string or a list of strings.
absl::Status ReadStop(const json& value, v1::SamplingParams* sampling) {
  if (value.is_string()) {
    sampling->add_stop(value.get<std::string>());
    return absl::OkStatus();
  }
  if (!value.is_array()) {
    return Bad("stop",
               absl::StrCat("must be a string or a list of strings, not ", Describe(value)));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    absl::StatusOr<std::string> stop = ReadString(value[i], absl::StrCat("stop[", i, "]"));
    if (!stop.ok()) return stop.status();
    sampling->add_stop(*std::move(stop));
  }
  return absl::OkStatus();
}

absl::Status ReadTokenIds(const json& value, const std::string& field,
                          google::protobuf::RepeatedField<uint32_t>* ids) {
  for (size_t i = 0; i < value.size(); ++i) {
    absl::StatusOr<uint64_t> id = ReadUnsigned(value[i], absl::StrCat(field, "[", i, "]"),
                                               std::numeric_limits<uint32_t>::max());
    if (!id.ok()) return id.status();
    ids->Add(static_cast<uint32_t>(*id));
  }
  return absl::OkStatus();
}

// "prompt": a string or a list of token ids; OpenAI's batch forms ([string], [[ids]]) only with
// one prompt, as this endpoint answers one choice.
absl::Status ReadPrompt(const json& value, v1::CompletionRequest* request) {
  const json* prompt = &value;
  if (value.is_array() && value.size() == 1 && (value[0].is_string() || value[0].is_array())) {
    prompt = &value[0];
  } else if (value.is_array() && !value.empty() && (value[0].is_string() || value[0].is_array())) {
    return Bad("prompt", absl::StrCat(value.size(), " prompts: send one prompt per request"));
  }
  if (prompt->is_string()) {
    request->set_text(prompt->get<std::string>());
    return absl::OkStatus();
  }
  if (prompt->is_array()) {
    return ReadTokenIds(*prompt, "prompt", request->mutable_tokens()->mutable_ids());
  }
  return Bad("prompt",
             absl::StrCat("must be a string or a list of token ids, not ", Describe(value)));
}

// "content": a string, or a list of {"type": "text", "text": ...} parts (joined by newlines, as
// vLLM joins them).
absl::StatusOr<std::string> ReadContent(const json& value, const std::string& field) {
  if (value.is_null()) return std::string();
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_array()) {
    return Bad(field,
               absl::StrCat("must be a string or a list of text parts, not ", Describe(value)));
  }
  std::vector<std::string> texts;
  for (size_t i = 0; i < value.size(); ++i) {
    const std::string part_field = absl::StrCat(field, "[", i, "]");
    const json& part = value[i];
    if (!part.is_object())
      return Bad(part_field, absl::StrCat("must be an object, not ", Describe(part)));
    auto type = part.find("type");
    if (type == part.end() || !type->is_string() || type->get<std::string>() != "text") {
      return Bad(part_field + ".type", "only \"text\" parts are supported");
    }
    auto text = part.find("text");
    if (text == part.end()) return Bad(part_field + ".text", "is required");
    absl::StatusOr<std::string> t = ReadString(*text, part_field + ".text");
    if (!t.ok()) return t.status();
    texts.push_back(*std::move(t));
  }
  return absl::StrJoin(texts, "\n");
}

absl::Status ReadMessages(const json& value, v1::ChatPrompt* chat) {
  if (!value.is_array()) {
    return Bad("messages", absl::StrCat("must be a list of messages, not ", Describe(value)));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const json& m = value[i];
    if (!m.is_object()) return Bad(field, absl::StrCat("must be an object, not ", Describe(m)));
    v1::ChatMessage* message = chat->add_messages();
    bool has_role = false;
    for (const auto& [key, item] : m.items()) {
      const std::string item_field = absl::StrCat(field, ".", key);
      if (key == "role") {
        absl::StatusOr<std::string> role = ReadString(item, item_field);
        if (!role.ok()) return role.status();
        // OpenAI's newer name for the system role.
        message->set_role(*role == "developer" ? "system" : *role);
        has_role = true;
      } else if (key == "content") {
        absl::StatusOr<std::string> content = ReadContent(item, item_field);
        if (!content.ok()) return content.status();
        message->set_content(*std::move(content));
      } else if (key == "name") {
        if (absl::StatusOr<std::string> name = ReadString(item, item_field); !name.ok()) {
          return name.status();
        }
      } else {
        return Bad(item_field, "is not supported");
      }
    }
    if (!has_role) return Bad(field + ".role", "is required");
  }
  return absl::OkStatus();
}

// A field OpenAI defines that epinfer supports only at its default: anything else is refused
// rather than silently ignored.
absl::Status RequireDefault(const json& value, const std::string& key) {
  if (value.is_null()) return absl::OkStatus();
  const bool is_default =
      ((key == "n" || key == "best_of") && value.is_number_integer() &&
       value.get<int64_t>() == 1) ||
      ((key == "presence_penalty" || key == "frequency_penalty") && value.is_number() &&
       value.get<double>() == 0) ||
      (key == "echo" && value.is_boolean() && !value.get<bool>()) ||
      (key == "suffix" && value.is_string() && value.get<std::string>().empty()) ||
      (key == "logit_bias" && value.is_object() && value.empty());
  if (is_default) return absl::OkStatus();
  return Bad(key, "only its default is supported");
}

bool IsKnownField(const std::string& key, bool chat) {
  static const char* const kCommon[] = {"model",
                                        "max_tokens",
                                        "temperature",
                                        "top_p",
                                        "top_k",
                                        "seed",
                                        "stop",
                                        "stop_token_ids",
                                        "ignore_eos",
                                        "stream",
                                        "stream_options",
                                        "return_token_ids",
                                        "logprobs",
                                        "user",
                                        "n",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "logit_bias"};
  static const char* const kCompletions[] = {"prompt", "echo", "best_of", "suffix"};
  static const char* const kChat[] = {"messages", "max_completion_tokens", "top_logprobs"};
  for (const char* k : kCommon) {
    if (key == k) return true;
  }
  if (chat) {
    for (const char* k : kChat) {
      if (key == k) return true;
    }
  } else {
    for (const char* k : kCompletions) {
      if (key == k) return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(Endpoint endpoint, absl::string_view body) {
  const json root = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    JsonErrorLocator locator;
    json::sax_parse(body.begin(), body.end(), &locator);
    return absl::InvalidArgumentError(locator.message().empty() ? "body: invalid JSON"
                                                                : locator.message());
  }
  if (!root.is_object())
    return Bad("body", absl::StrCat("must be a JSON object, not ", Describe(root)));

  const bool chat = endpoint == Endpoint::kChatCompletions;
  OpenAiRequest out;
  out.endpoint = endpoint;
  v1::CompletionRequest& request = out.request;
  v1::SamplingParams& sampling = *request.mutable_sampling();
  bool has_prompt = false;
  std::optional<bool> chat_logprobs;
  std::optional<uint64_t> top_logprobs;
  for (const auto& [key, value] : root.items()) {
    absl::Status status;
    if (!IsKnownField(key, chat)) return Bad(key, "is not a recognised field of this endpoint");
    if (value.is_null() && key != "prompt" && key != "messages") continue;  // null: unset
    if (key == "model") {
      absl::StatusOr<std::string> model = ReadString(value, key);
      status = model.status();
      if (model.ok()) request.set_model(*model);
    } else if (key == "prompt") {
      status = ReadPrompt(value, &request);
      has_prompt = true;
    } else if (key == "messages") {
      status = ReadMessages(value, request.mutable_chat());
      has_prompt = true;
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      absl::StatusOr<uint64_t> n = ReadUnsigned(value, key, std::numeric_limits<uint32_t>::max());
      status = n.status();
      if (n.ok()) sampling.set_max_tokens(static_cast<uint32_t>(*n));
    } else if (key == "temperature" || key == "top_p") {
      absl::StatusOr<float> x = ReadNumber(value, key);
      status = x.status();
      if (x.ok()) key == "temperature" ? sampling.set_temperature(*x) : sampling.set_top_p(*x);
    } else if (key == "top_k") {
      // vLLM's convention: -1 turns top-k off, as 0 does here.
      if (value.is_number_integer() && !value.is_number_unsigned() && value.get<int64_t>() == -1) {
        sampling.set_top_k(0);
      } else {
        absl::StatusOr<uint64_t> k = ReadUnsigned(value, key, std::numeric_limits<uint32_t>::max());
        status = k.status();
        if (k.ok()) sampling.set_top_k(static_cast<uint32_t>(*k));
      }
    } else if (key == "seed") {
      // Any 64-bit integer: a negative seed keeps its bits.
      if (value.is_number_unsigned()) {
        sampling.set_seed(value.get<uint64_t>());
      } else if (value.is_number_integer()) {
        sampling.set_seed(static_cast<uint64_t>(value.get<int64_t>()));
      } else {
        status = Bad(key, absl::StrCat("must be an integer, not ", Describe(value)));
      }
    } else if (key == "stop") {
      status = ReadStop(value, &sampling);
    } else if (key == "stop_token_ids") {
      status = value.is_array()
                   ? ReadTokenIds(value, key, sampling.mutable_stop_token_ids())
                   : Bad(key, absl::StrCat("must be a list of token ids, not ", Describe(value)));
    } else if (key == "ignore_eos" || key == "stream" || key == "return_token_ids") {
      absl::StatusOr<bool> b = ReadBool(value, key);
      status = b.status();
      if (b.ok() && key == "ignore_eos") sampling.set_ignore_eos(*b);
      if (b.ok() && key == "stream") out.stream = *b;
      if (b.ok() && key == "return_token_ids") out.return_token_ids = *b;
    } else if (key == "stream_options") {
      if (!value.is_object()) {
        status = Bad(key, absl::StrCat("must be an object, not ", Describe(value)));
      } else {
        for (const auto& [option, v] : value.items()) {
          if (option != "include_usage") {
            status = Bad(absl::StrCat(key, ".", option), "is not supported");
            break;
          }
          absl::StatusOr<bool> b = ReadBool(v, "stream_options.include_usage");
          status = b.status();
          if (b.ok()) out.include_usage = *b;
        }
      }
    } else if (key == "logprobs" && !chat) {
      absl::StatusOr<uint64_t> n = ReadUnsigned(value, key, std::numeric_limits<uint32_t>::max());
      status = n.status();
      if (n.ok()) sampling.set_logprobs(static_cast<uint32_t>(*n));
    } else if (key == "logprobs" && chat) {
      absl::StatusOr<bool> b = ReadBool(value, key);
      status = b.status();
      if (b.ok()) chat_logprobs = *b;
    } else if (key == "top_logprobs") {
      absl::StatusOr<uint64_t> n = ReadUnsigned(value, key, std::numeric_limits<uint32_t>::max());
      status = n.status();
      if (n.ok()) top_logprobs = *n;
    } else if (key == "user") {
      status = ReadString(value, key).status();
    } else {  // n, best_of, echo, suffix, presence_penalty, frequency_penalty, logit_bias
      status = RequireDefault(value, key);
    }
    if (!status.ok()) return status;
  }
  if (!has_prompt) return Bad(chat ? "messages" : "prompt", "is required");
  if (top_logprobs && !chat_logprobs.value_or(false)) {
    return Bad("top_logprobs", "requires logprobs: true");
  }
  if (chat_logprobs.value_or(false))
    sampling.set_logprobs(static_cast<uint32_t>(top_logprobs.value_or(0)));
  if (out.include_usage && !out.stream) return Bad("stream_options", "requires stream: true");
  return out;
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;  // client closed the request
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

namespace {

// The leading "field: " of a status message, when it is a field path.
absl::string_view FieldOf(absl::string_view message) {
  const size_t colon = message.find(": ");
  if (colon == absl::string_view::npos || colon == 0) return {};
  for (char c : message.substr(0, colon)) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '[' &&
        c != ']') {
      return {};
    }
  }
  return message.substr(0, colon);
}

// v1::CompletionRequest's field path → the OpenAI request's ("chat.messages[0].role" →
// "messages[0].role", "sampling.top_p" → "top_p", "tokens.ids[3]" → "prompt[3]").
std::string OpenAiField(absl::string_view field, Endpoint endpoint) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  absl::string_view rest = field;
  if (absl::ConsumePrefix(&rest, "sampling.")) {
    return chat && absl::StartsWith(rest, "logprobs") ? absl::StrCat("top_", rest)
                                                      : std::string(rest);
  }
  if (absl::ConsumePrefix(&rest, "chat.messages")) return absl::StrCat("messages", rest);
  if (absl::ConsumePrefix(&rest, "tokens.ids")) return absl::StrCat("prompt", rest);
  if (field == "text") return "prompt";
  if (field == "prompt") return chat ? "messages" : "prompt";
  return std::string(field);
}

std::string Dump(const ordered_json& value) {
  // Replace, never throw, should a string hold invalid UTF-8.
  return value.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

ordered_json ErrorObject(const absl::Status& status, Endpoint endpoint) {
  const int http = HttpStatusOf(status.code());
  std::string message(status.message());
  ordered_json param = nullptr;
  if (status.code() == absl::StatusCode::kInvalidArgument ||
      status.code() == absl::StatusCode::kNotFound ||
      status.code() == absl::StatusCode::kFailedPrecondition) {
    if (absl::string_view field = FieldOf(message); !field.empty()) {
      const std::string renamed = OpenAiField(field, endpoint);
      message = absl::StrCat(renamed, message.substr(field.size()));
      param = renamed;
    }
  }
  std::string type = http >= 500                                           ? "server_error"
                     : status.code() == absl::StatusCode::kUnauthenticated ? "authentication_error"
                     : status.code() == absl::StatusCode::kResourceExhausted
                         ? "rate_limit_error"
                         : "invalid_request_error";
  std::string code = absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
  if (status.code() == absl::StatusCode::kUnauthenticated) code = "invalid_api_key";
  if (status.code() == absl::StatusCode::kNotFound && param == "model") code = "model_not_found";
  ordered_json error;
  error["message"] = message;
  error["type"] = type;
  error["param"] = param;
  error["code"] = code;
  return ordered_json{{"error", error}};
}

}  // namespace

std::string OpenAiErrorJson(const absl::Status& status, Endpoint endpoint) {
  return Dump(ErrorObject(status, endpoint));
}

namespace {

ordered_json FinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
    case v1::FINISH_REASON_EOS:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return nullptr;
  }
}

ordered_json Usage(const v1::Usage& usage) {
  ordered_json u;
  u["prompt_tokens"] = usage.prompt_tokens();
  u["completion_tokens"] = usage.completion_tokens();
  u["total_tokens"] = usage.prompt_tokens() + usage.completion_tokens();
  if (usage.cached_tokens() > 0)
    u["prompt_tokens_details"] = {{"cached_tokens", usage.cached_tokens()}};
  return u;
}

ordered_json Bytes(const std::string& token) {
  ordered_json bytes = ordered_json::array();
  for (unsigned char c : token) bytes.push_back(c);
  return bytes;
}

// The legacy completions format: parallel lists, top alternatives as {token: logprob}.
ordered_json CompletionLogprobs(const google::protobuf::RepeatedPtrField<v1::TokenLogprob>& lps) {
  ordered_json tokens = ordered_json::array(), logprobs = ordered_json::array(),
               tops = ordered_json::array();
  for (const v1::TokenLogprob& lp : lps) {
    tokens.push_back(lp.token());
    logprobs.push_back(lp.logprob());
    ordered_json top = ordered_json::object();
    for (const v1::TopLogprob& t : lp.top()) top[t.token()] = t.logprob();
    tops.push_back(std::move(top));
  }
  return {{"tokens", tokens}, {"token_logprobs", logprobs}, {"top_logprobs", tops}};
}

// The chat format: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
ordered_json ChatLogprobs(const google::protobuf::RepeatedPtrField<v1::TokenLogprob>& lps) {
  ordered_json content = ordered_json::array();
  for (const v1::TokenLogprob& lp : lps) {
    ordered_json top = ordered_json::array();
    for (const v1::TopLogprob& t : lp.top()) {
      top.push_back({{"token", t.token()}, {"logprob", t.logprob()}, {"bytes", Bytes(t.token())}});
    }
    content.push_back({{"token", lp.token()},
                       {"logprob", lp.logprob()},
                       {"bytes", Bytes(lp.token())},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

ordered_json TokenIds(const google::protobuf::RepeatedField<uint32_t>& ids) {
  return ordered_json(std::vector<uint32_t>(ids.begin(), ids.end()));
}

ordered_json Head(const OpenAiAnswerFormat& format, const std::string& request_id, bool chunk) {
  const bool chat = format.endpoint == Endpoint::kChatCompletions;
  ordered_json head;
  head["id"] = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", request_id);
  head["object"] = chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  head["created"] = format.created_unix_s;
  head["model"] = format.model;
  return head;
}

ordered_json Logprobs(const OpenAiAnswerFormat& format,
                      const google::protobuf::RepeatedPtrField<v1::TokenLogprob>& lps) {
  if (!format.logprobs) return nullptr;
  return format.endpoint == Endpoint::kChatCompletions ? ChatLogprobs(lps)
                                                       : CompletionLogprobs(lps);
}

std::string Event(const ordered_json& data) { return absl::StrCat("data: ", Dump(data), "\n\n"); }

}  // namespace

std::string OpenAiAnswerFormat::Unary(const v1::CompletionResponse& r) const {
  ordered_json answer = Head(*this, r.request_id(), false);
  ordered_json choice;
  choice["index"] = 0;
  if (endpoint == Endpoint::kChatCompletions) {
    ordered_json message;
    message["role"] = "assistant";
    message["content"] = r.text();
    if (reasoning_model || !r.reasoning_content().empty()) {
      message["reasoning_content"] = r.reasoning_content();
    }
    choice["message"] = message;
  } else {
    choice["text"] = r.text();
  }
  choice["logprobs"] = Logprobs(*this, r.logprobs());
  choice["finish_reason"] = FinishReason(r.finish_reason());
  if (return_token_ids) choice["token_ids"] = TokenIds(r.token_ids());
  answer["choices"] = ordered_json::array({choice});
  answer["usage"] = Usage(r.usage());
  return Dump(answer);
}

std::string OpenAiEventStream::Render(const v1::CompletionChunk& chunk) {
  const bool last = chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  const bool carries = !chunk.text().empty() || !chunk.reasoning_content().empty() ||
                       (format_.logprobs && chunk.logprobs_size() > 0) ||
                       (format_.return_token_ids && chunk.token_ids_size() > 0);
  if (!last && !carries && !first_) return "";
  ordered_json event = Head(format_, chunk.request_id(), true);
  ordered_json choice;
  choice["index"] = 0;
  if (format_.endpoint == Endpoint::kChatCompletions) {
    ordered_json delta = ordered_json::object();
    if (first_) delta["role"] = "assistant";
    if (!chunk.reasoning_content().empty()) delta["reasoning_content"] = chunk.reasoning_content();
    if (!chunk.text().empty() || first_) delta["content"] = chunk.text();
    choice["delta"] = delta;
  } else {
    choice["text"] = chunk.text();
  }
  choice["logprobs"] = Logprobs(format_, chunk.logprobs());
  choice["finish_reason"] = FinishReason(chunk.finish_reason());
  if (format_.return_token_ids) choice["token_ids"] = TokenIds(chunk.token_ids());
  event["choices"] = ordered_json::array({choice});
  first_ = false;
  // Usage on the last chunk, as DeepSeek's API sends it; with stream_options.include_usage,
  // OpenAI's form: null on every chunk, then a chunk of its own with no choices.
  if (format_.include_usage) {
    event["usage"] = nullptr;
  } else if (last) {
    event["usage"] = Usage(chunk.usage());
  }
  std::string out = Event(event);
  if (last && format_.include_usage) {
    ordered_json usage = Head(format_, chunk.request_id(), true);
    usage["choices"] = ordered_json::array();
    usage["usage"] = Usage(chunk.usage());
    out += Event(usage);
  }
  return out;
}

std::string OpenAiModelList(const v1::ListModelsResponse& models) {
  ordered_json data = ordered_json::array();
  for (const v1::ModelInfo& m : models.models()) {
    ordered_json model;
    model["id"] = m.id();
    model["object"] = "model";
    model["created"] = 0;
    model["owned_by"] = "epinfer";
    model["context_length"] = m.context_length();
    model["architecture"] = m.architecture();
    model["reasoning"] = m.reasoning();
    model["num_ranks"] = m.num_ranks();
    data.push_back(std::move(model));
  }
  return Dump({{"object", "list"}, {"data", data}});
}

std::string OpenAiEventStream::End(const absl::Status& status) const {
  // An error after the stream began: OpenAI's error object as an event (the OpenAI SDKs raise
  // it), then the end marker.
  std::string out = status.ok() ? "" : Event(ErrorObject(status, format_.endpoint));
  return out + "data: [DONE]\n\n";
}

}  // namespace epinfer
