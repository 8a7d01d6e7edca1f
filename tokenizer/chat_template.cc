#include "tokenizer/chat_template.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"

namespace epinfer {

// DeepSeek-V3 tokenizer_config.json "chat_template" (deepseek-ai/DeepSeek-V3), byte for byte.
const char kDeepSeekV3ChatTemplate[] = R"tmpl({% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '

' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '
' + '```json' + '
' + tool['function']['arguments'] + '
' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'
' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '
' + '```json' + '
' + tool['function']['arguments'] + '
' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'
<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %})tmpl";

namespace {

constexpr absl::string_view kUser = "<｜User｜>";
constexpr absl::string_view kAssistant = "<｜Assistant｜>";
constexpr absl::string_view kEndOfSentence = "<｜end▁of▁sentence｜>";
constexpr absl::string_view kToolCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr absl::string_view kToolCallsEnd = "<｜tool▁calls▁end｜>";
constexpr absl::string_view kToolCallBegin = "<｜tool▁call▁begin｜>";
constexpr absl::string_view kToolCallEnd = "<｜tool▁call▁end｜>";
constexpr absl::string_view kToolSep = "<｜tool▁sep｜>";
constexpr absl::string_view kToolOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr absl::string_view kToolOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr absl::string_view kToolOutputBegin = "<｜tool▁output▁begin｜>";
constexpr absl::string_view kToolOutputEnd = "<｜tool▁output▁end｜>";
constexpr absl::string_view kThinkOpen = "<think>";
constexpr absl::string_view kThinkClose = "</think>";

// The pieces of the V3 template that R1 changes (DeepSeek-R1 tokenizer_config.json).
constexpr absl::string_view kV3AssistantTurn =
    "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}";
constexpr absl::string_view kR1AssistantTurn =
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}";
constexpr absl::string_view kV3GenerationPrompt =
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";
constexpr absl::string_view kR1GenerationPrompt =
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}";

absl::Status BadMessage(size_t index, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("messages[", index, "]", what));
}

}  // namespace

std::string DeepSeekR1ChatTemplate() {
  return absl::StrReplaceAll(kDeepSeekV3ChatTemplate, {{kV3AssistantTurn, kR1AssistantTurn},
                                                       {kV3GenerationPrompt, kR1GenerationPrompt}});
}

absl::StatusOr<ChatTemplate> ChatTemplate::Create(absl::string_view chat_template,
                                                  std::string bos_token) {
  if (chat_template.empty()) {
    return absl::FailedPreconditionError("the tokenizer has no chat_template");
  }
  // The V3 family: the role tokens, and V3's tool-call rule (tool calls when content is none).
  if (!absl::StrContains(chat_template, kUser) || !absl::StrContains(chat_template, kAssistant) ||
      !absl::StrContains(chat_template, "message['content'] is none")) {
    return absl::UnimplementedError(
        "chat_template: only the DeepSeek-V3 / R1 template family is supported");
  }
  ChatTemplate result;
  result.bos_token_ = std::move(bos_token);
  result.opens_reasoning_ = absl::StrContains(chat_template, "<｜Assistant｜><think>\n") ||
                            absl::StrContains(chat_template, "<｜Assistant｜><think>\\n");
  result.drops_history_reasoning_ = absl::StrContains(chat_template, "split('</think>')");
  return result;
}

absl::StatusOr<ChatTemplate> ChatTemplate::ForTokenizer(const Tokenizer& tokenizer) {
  return Create(tokenizer.config().chat_template, tokenizer.config().bos_token);
}

// The template, statement by statement (tokenizer_config.json of DeepSeek-V3; R1 where noted).
absl::StatusOr<std::vector<ChatTemplate::Segment>> ChatTemplate::Segments(
    const std::vector<ChatMessage>& messages, const ChatOptions& options) const {
  if (options.continue_final_message) {
    if (options.add_generation_prompt) {
      return absl::InvalidArgumentError(
          "continue_final_message and add_generation_prompt are mutually exclusive");
    }
    if (messages.empty() || messages.back().role != "assistant" || !messages.back().content) {
      return absl::InvalidArgumentError(
          "continue_final_message needs a final assistant message with content");
    }
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
      return BadMessage(i, absl::StrCat(".role: \"", m.role,
                                        "\" is not one of system, user, assistant, tool"));
    }
    if (!m.content && (m.role != "assistant" || m.tool_calls.empty())) {
      return BadMessage(i, ".content: required (null only for an assistant with tool_calls)");
    }
  }

  std::vector<Segment> out;
  auto control = [&](absl::string_view token) {
    out.push_back({std::string(token), Segment::Kind::kControl});
  };
  auto text = [&](std::string value) { out.push_back({std::move(value), Segment::Kind::kText}); };
  auto assistant_text = [&](std::string value) {
    out.push_back({std::move(value), Segment::Kind::kAssistantText});
  };

  std::string system_prompt;
  bool first_system = true;
  for (const ChatMessage& m : messages) {
    if (m.role != "system") continue;
    if (!first_system) system_prompt += "\n\n";
    system_prompt += *m.content;
    first_system = false;
  }
  if (!bos_token_.empty()) control(bos_token_);
  text(system_prompt);

  bool is_first = false, is_tool = false, is_output_first = true;
  size_t final_content_end = 0;  // segments up to the last message's content
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      is_tool = false;
      control(kUser);
      text(*m.content);
    } else if (m.role == "assistant" && !m.content) {
      is_tool = false;
      for (const ToolCall& tool : m.tool_calls) {
        const std::string body = absl::StrCat(tool.name, "\n```json\n", tool.arguments, "\n```");
        if (!is_first) {
          control(kAssistant);
          control(kToolCallsBegin);
          control(kToolCallBegin);
          text(tool.type);
          control(kToolSep);
          text(body);
          control(kToolCallEnd);
          is_first = true;
        } else {
          // V3 closes the calls after the second and later calls only (and never resets
          // is_first): reproduced as written.
          text("\n");
          control(kToolCallBegin);
          text(tool.type);
          control(kToolSep);
          text(body);
          control(kToolCallEnd);
          control(kToolCallsEnd);
          control(kEndOfSentence);
        }
      }
    } else if (m.role == "assistant") {
      if (is_tool) {
        control(kToolOutputsEnd);
        assistant_text(*m.content);
        final_content_end = out.size();
        control(kEndOfSentence);
        is_tool = false;
      } else {
        std::string content = *m.content;
        if (drops_history_reasoning_) {  // R1: content.split('</think>')[-1]
          const size_t close = content.rfind(kThinkClose.data(), std::string::npos, kThinkClose.size());
          if (close != std::string::npos) content = content.substr(close + kThinkClose.size());
        }
        control(kAssistant);
        assistant_text(std::move(content));
        final_content_end = out.size();
        control(kEndOfSentence);
      }
    } else if (m.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        control(kToolOutputsBegin);
        control(kToolOutputBegin);
        is_output_first = false;
      } else {
        text("\n");
        control(kToolOutputBegin);
      }
      text(*m.content);
      control(kToolOutputEnd);
    }
  }
  if (options.continue_final_message) {
    out.resize(final_content_end);
    return out;
  }
  if (is_tool) control(kToolOutputsEnd);
  if (options.add_generation_prompt && !is_tool) {
    control(kAssistant);
    if (opens_reasoning_) {
      control(kThinkOpen);
      text("\n");
    }
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 const ChatOptions& options) const {
  ASSIGN_OR_RETURN(std::vector<Segment> segments, Segments(messages, options));
  std::string prompt;
  for (const Segment& segment : segments) prompt += segment.text;
  return prompt;
}

absl::StatusOr<std::vector<int32_t>> ChatTemplate::Encode(const Tokenizer& tokenizer,
                                                          const std::vector<ChatMessage>& messages,
                                                          const ChatOptions& options,
                                                          size_t max_tokens) const {
  ASSIGN_OR_RETURN(std::vector<Segment> segments, Segments(messages, options));
  std::vector<int32_t> ids;
  std::string run;  // text between control tokens is encoded as one section
  bool run_allows_special = false;
  auto flush = [&]() -> absl::Status {
    if (run.empty()) return absl::OkStatus();
    EncodeOptions text_options;
    text_options.allow_special_tokens = run_allows_special;
    text_options.max_tokens = max_tokens;  // bounds the work; the total is checked below
    auto encoded = tokenizer.Encode(run, text_options);
    if (!encoded.ok()) {
      return absl::Status(encoded.status().code(),
                          absl::StrCat("chat prompt: ", encoded.status().message()));
    }
    ids.insert(ids.end(), encoded->begin(), encoded->end());
    run.clear();
    return absl::OkStatus();
  };
  for (const Segment& segment : segments) {
    // A template token the vocabulary lacks (R1's "<think>" in V3's vocabulary) is plain text,
    // as it is when the rendered prompt is encoded.
    if (segment.kind == Segment::Kind::kControl) {
      if (absl::StatusOr<int32_t> id = tokenizer.SpecialTokenId(segment.text); id.ok()) {
        RETURN_IF_ERROR(flush());
        ids.push_back(*id);
        continue;
      }
    }
    const bool allows_special = segment.kind == Segment::Kind::kAssistantText;
    if (allows_special != run_allows_special) {
      RETURN_IF_ERROR(flush());
      run_allows_special = allows_special;
    }
    run += segment.text;
  }
  RETURN_IF_ERROR(flush());
  if (max_tokens != 0 && ids.size() > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("chat prompt is ", ids.size(),
                                                   " tokens, over the limit of ", max_tokens));
  }
  return ids;
}

}  // namespace epinfer
