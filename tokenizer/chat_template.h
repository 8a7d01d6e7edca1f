#ifndef EPINFER_TOKENIZER_CHAT_TEMPLATE_H_
#define EPINFER_TOKENIZER_CHAT_TEMPLATE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tokenizer/tokenizer.h"

namespace epinfer {

// DeepSeek-V3's chat_template, verbatim from its tokenizer_config.json (data, not code: written
// into the tokenizer_config.json of trained tokenizers, and checked against DeepSeek's file).
extern const char kDeepSeekV3ChatTemplate[];
// DeepSeek-R1's changes to it: history drops the reasoning before "</think>", and the generation
// prompt opens the reasoning with "<think>\n".
std::string DeepSeekR1ChatTemplate();

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, as the model writes it
};

struct ChatMessage {
  std::string role;                    // "system", "user", "assistant" or "tool"
  std::optional<std::string> content;  // null only for an assistant message with tool_calls
  std::vector<ToolCall> tool_calls;
};

struct ChatOptions {
  bool add_generation_prompt = true;
  // Leave the last (assistant) message open so the model continues it (assistant prefill): the
  // prompt ends right after that message's content, as Hugging Face's continue_final_message.
  bool continue_final_message = false;
};

// The DeepSeek-V3 / R1 chat template, rendered natively. It reproduces the Jinja template of
// the model's tokenizer_config.json (tests compare it with Hugging Face's Jinja renderer); which
// variant applies is read from that template's text. Other templates are UNIMPLEMENTED.
class ChatTemplate {
 public:
  // `chat_template` is tokenizer_config.json's template; `bos_token` its bos_token.
  static absl::StatusOr<ChatTemplate> Create(absl::string_view chat_template,
                                             std::string bos_token);
  // From a loaded tokenizer's config.
  static absl::StatusOr<ChatTemplate> ForTokenizer(const Tokenizer& tokenizer);

  // The prompt text, exactly as the Jinja template renders it.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     const ChatOptions& options = {}) const;

  // The prompt's token ids. System, user and tool text is encoded with special tokens off, so
  // it cannot forge "<｜Assistant｜>"; assistant content (the model's own earlier output, with
  // its "<think>" tokens) keeps its added tokens, as Hugging Face encodes it. For user text
  // free of added-token strings this equals encoding Render()'s output with special tokens on.
  absl::StatusOr<std::vector<int32_t>> Encode(const Tokenizer& tokenizer,
                                              const std::vector<ChatMessage>& messages,
                                              const ChatOptions& options = {},
                                              size_t max_tokens = 0) const;

  // Whether the generation prompt leaves the model inside "<think>" (R1): its output starts
  // with reasoning.
  bool opens_reasoning() const { return opens_reasoning_; }

 private:
  struct Segment {
    enum class Kind { kControl, kText, kAssistantText };
    std::string text;
    Kind kind;  // kControl: an added token that the template writes
  };
  absl::StatusOr<std::vector<Segment>> Segments(const std::vector<ChatMessage>& messages,
                                                const ChatOptions& options) const;

  std::string bos_token_;
  bool opens_reasoning_ = false;
  bool drops_history_reasoning_ = false;
};

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_CHAT_TEMPLATE_H_
