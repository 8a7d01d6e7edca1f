#include "tokenizer/reasoning.h"

#include "absl/strings/match.h"

namespace epinfer {
namespace {

constexpr absl::string_view kOpen = "<think>";
constexpr absl::string_view kClose = "</think>";

// Length of the longest suffix of `text` that is a proper prefix of `tag`.
size_t PartialTagAtEnd(absl::string_view text, absl::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
    if (absl::EndsWith(text, tag.substr(0, n))) return n;
  }
  return 0;
}

}  // namespace

ReasoningDelta ReasoningSplitter::Push(absl::string_view text) {
  ReasoningDelta delta;
  held_.append(text.data(), text.size());
  if (state_ == State::kStart) {
    // Reasoning only if the output opens with <think>; anything else is all content.
    if (held_.size() < kOpen.size() && absl::StartsWith(kOpen, held_)) return delta;
    if (absl::StartsWith(held_, kOpen)) {
      held_.erase(0, kOpen.size());
      state_ = State::kReasoning;
    } else {
      state_ = State::kContent;
    }
  }
  if (state_ == State::kReasoning) {
    const size_t close = held_.find(kClose.data(), 0, kClose.size());
    if (close == std::string::npos) {
      const size_t keep = PartialTagAtEnd(held_, kClose);
      delta.reasoning = held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return delta;
    }
    delta.reasoning = held_.substr(0, close);
    held_.erase(0, close + kClose.size());
    state_ = State::kContent;
  }
  delta.content.swap(held_);
  held_.clear();
  return delta;
}

ReasoningDelta ReasoningSplitter::Finish() {
  ReasoningDelta delta;
  (state_ == State::kReasoning ? delta.reasoning : delta.content).swap(held_);
  held_.clear();
  return delta;
}

ReasoningDelta ReasoningSplitter::Split(absl::string_view output, bool starts_in_reasoning) {
  ReasoningSplitter splitter(starts_in_reasoning);
  ReasoningDelta all = splitter.Push(output);
  ReasoningDelta rest = splitter.Finish();
  all.reasoning += rest.reasoning;
  all.content += rest.content;
  return all;
}

}  // namespace epinfer
