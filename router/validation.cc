#include "router/validation.h"

#include <cmath>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace epinfer {
namespace {

absl::Status Field(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status CheckText(const std::string& field, const std::string& text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Field(field, absl::StrCat(text.size(), " bytes exceeds the limit of ", max_bytes));
  }
  size_t offset = 0;
  if (!IsValidUtf8(text, &offset)) {
    return Field(field, absl::StrCat("invalid UTF-8 at byte offset ", offset));
  }
  return absl::OkStatus();
}

bool IsIdCharacter(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

}  // namespace

bool IsValidUtf8(absl::string_view text, size_t* bad_offset) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    int length = 0;
    uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      length = 2;
      code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      length = 3;
      code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      length = 4;
      code = c & 0x07;
    } else {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    if (i + length > text.size()) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    for (int k = 1; k < length; ++k) {
      const unsigned char d = static_cast<unsigned char>(text[i + k]);
      if ((d & 0xc0) != 0x80) {
        if (bad_offset) *bad_offset = i;
        return false;
      }
      code = code << 6 | (d & 0x3f);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are invalid.
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kMin[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += length;
  }
  return true;
}

absl::Status ValidateCompletionRequest(const v1::CompletionRequest& r, const ModelLimits& limits) {
  if (r.model().size() > 256) return Field("model", "longer than 256 bytes");
  if (r.request_id().size() > 128) return Field("request_id", "longer than 128 bytes");
  for (char c : r.request_id()) {
    if (!IsIdCharacter(c)) return Field("request_id", "only [A-Za-z0-9._:-] are allowed");
  }
  switch (r.prompt_case()) {
    case v1::CompletionRequest::kText:
      if (r.text().empty()) return Field("text", "is empty");
      if (absl::Status s = CheckText("text", r.text(), 4 << 20); !s.ok()) return s;
      break;
    case v1::CompletionRequest::kTokens:
      if (r.tokens().ids().empty()) return Field("tokens.ids", "is empty");
      if (r.tokens().ids_size() > limits.context_length) {
        return Field("tokens.ids", absl::StrCat(r.tokens().ids_size(),
                                                " tokens exceed the context length ",
                                                limits.context_length));
      }
      for (int i = 0; i < r.tokens().ids_size(); ++i) {
        if (r.tokens().ids(i) >= limits.vocab_size) {
          return Field(absl::StrCat("tokens.ids[", i, "]"),
                       absl::StrCat(r.tokens().ids(i), " is not below vocab_size ",
                                    limits.vocab_size));
        }
      }
      break;
    case v1::CompletionRequest::kChat: {
      const auto& messages = r.chat().messages();
      if (messages.empty()) return Field("chat.messages", "is empty");
      if (messages.size() > 256) return Field("chat.messages", "more than 256 messages");
      for (int i = 0; i < messages.size(); ++i) {
        const std::string field = absl::StrCat("chat.messages[", i, "]");
        const std::string& role = messages[i].role();
        if (role != "system" && role != "user" && role != "assistant") {
          return Field(field + ".role",
                       absl::StrCat("\"", role, "\" is not system, user or assistant"));
        }
        if (role == "system" && i != 0) return Field(field + ".role", "system must come first");
        if (absl::Status s = CheckText(field + ".content", messages[i].content(), 1 << 20);
            !s.ok()) {
          return s;
        }
      }
      break;
    }
    case v1::CompletionRequest::PROMPT_NOT_SET:
      return Field("prompt", "one of text, tokens or chat is required");
  }
  const v1::SamplingParams& s = r.sampling();
  if (s.max_tokens() > limits.context_length) {
    return Field("sampling.max_tokens", absl::StrCat(s.max_tokens(), " exceeds the context length ",
                                                     limits.context_length));
  }
  if (s.has_temperature() && !(s.temperature() >= 0 && s.temperature() <= 2)) {
    return Field("sampling.temperature", absl::StrCat(s.temperature(), " is outside [0, 2]"));
  }
  if (s.has_top_p() && !(s.top_p() > 0 && s.top_p() <= 1)) {
    return Field("sampling.top_p", absl::StrCat(s.top_p(), " is outside (0, 1]"));
  }
  if (s.top_k() > limits.vocab_size) {
    return Field("sampling.top_k", absl::StrCat(s.top_k(), " exceeds vocab_size ",
                                                limits.vocab_size));
  }
  if (s.stop_size() > 16) return Field("sampling.stop", "more than 16 stop strings");
  for (int i = 0; i < s.stop_size(); ++i) {
    const std::string field = absl::StrCat("sampling.stop[", i, "]");
    if (s.stop(i).empty()) return Field(field, "is empty");
    if (absl::Status st = CheckText(field, s.stop(i), 256); !st.ok()) return st;
  }
  if (s.stop_token_ids_size() > 64) return Field("sampling.stop_token_ids", "more than 64 ids");
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    if (s.stop_token_ids(i) >= limits.vocab_size) {
      return Field(absl::StrCat("sampling.stop_token_ids[", i, "]"),
                   absl::StrCat(s.stop_token_ids(i), " is not below vocab_size ",
                                limits.vocab_size));
    }
  }
  if (s.has_logprobs() && s.logprobs() > 20) {
    return Field("sampling.logprobs", absl::StrCat(s.logprobs(), " is outside [0, 20]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ResolveMaxTokens(const v1::CompletionRequest& request,
                                         int64_t prompt_tokens, const ModelLimits& limits) {
  const int64_t room = limits.context_length - prompt_tokens;
  if (room < 1) {
    return Field("prompt", absl::StrCat(prompt_tokens, " tokens leave no room in the context "
                                                       "length of ",
                                        limits.context_length));
  }
  const int64_t asked = request.sampling().max_tokens();
  if (asked == 0) return std::min<int64_t>(256, room);
  if (asked > room) {
    return Field("sampling.max_tokens",
                 absl::StrCat("prompt (", prompt_tokens, " tokens) + max_tokens (", asked,
                              ") exceeds the context length ", limits.context_length));
  }
  return asked;
}

}  // namespace epinfer
