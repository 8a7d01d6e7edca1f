#ifndef EPINFER_TOKENIZER_REASONING_H_
#define EPINFER_TOKENIZER_REASONING_H_

#include <string>

#include "absl/strings/string_view.h"

namespace epinfer {

struct ReasoningDelta {
  std::string reasoning;  // reasoning_content: what the model writes inside <think>...</think>
  std::string content;    // the answer after </think>
};

// Splits a reasoning model's output (DeepSeek-R1) into reasoning and content, as text streams
// in. R1's prompt ends with "<think>\n", so its output starts inside the reasoning
// (`starts_in_reasoning`); a model that writes "<think>" itself is understood too. The tags are
// dropped. Text that might be the start of a tag split across pieces ("</thi") is held back
// until it is decided; Finish() releases it.
class ReasoningSplitter {
 public:
  explicit ReasoningSplitter(bool starts_in_reasoning)
      : state_(starts_in_reasoning ? State::kReasoning : State::kStart) {}

  ReasoningDelta Push(absl::string_view text);
  ReasoningDelta Finish();

  // The whole output at once.
  static ReasoningDelta Split(absl::string_view output, bool starts_in_reasoning);

 private:
  enum class State { kStart, kReasoning, kContent };
  State state_;
  std::string held_;
};

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_REASONING_H_
