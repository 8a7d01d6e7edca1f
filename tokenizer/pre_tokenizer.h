#ifndef EPINFER_TOKENIZER_PRE_TOKENIZER_H_
#define EPINFER_TOKENIZER_PRE_TOKENIZER_H_

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace re2 {
class RE2;
}

namespace epinfer {

// A Hugging Face (Oniguruma-syntax) regex rewritten for RE2. RE2 has no lookaround; the one
// lookahead byte-level tokenizers use, the `\s+(?!\S)|\s+` idiom ("a whitespace run, but leave
// its last character to the word that follows"), becomes a capture group that the matcher fixes
// up after the fact. `\s` means Unicode White_Space and `\d` means \p{Nd}, as in the reference.
struct Re2Pattern {
  std::string pattern;
  bool whitespace_lookahead = false;  // group 1 is the idiom's `\s+`
};
absl::StatusOr<Re2Pattern> TranslateHfRegex(absl::string_view hf_pattern);

// Pieces of one text section. Views point into the caller's text or into `owned` (a piece that a
// step rewrote, such as ByteLevel's prefix space).
struct PreTokenizedText {
  std::vector<absl::string_view> pieces;
  std::deque<std::string> owned;
};

// The `pre_tokenizer` of a byte-level BPE tokenizer.json: a Sequence of Split (Regex or String
// pattern; Isolated or Removed, invert) and ByteLevel (add_prefix_space, use_regex). The byte to
// unicode mapping of ByteLevel is left to the model, which works on raw bytes.
class PreTokenizer {
 public:
  // `config` is the tokenizer.json "pre_tokenizer" value (null: the text is one piece).
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const nlohmann::json& config);
  ~PreTokenizer();

  // Splits valid UTF-8 `text` into the pieces that BPE encodes one by one; replaces out->pieces.
  void Split(absl::string_view text, PreTokenizedText* out) const;

  bool has_byte_level() const { return has_byte_level_; }

  struct Step;

 private:
  PreTokenizer();
  absl::Status AddStep(const nlohmann::json& config, const std::string& where);

  std::vector<std::unique_ptr<Step>> steps_;
  bool has_byte_level_ = false;
};

// The regex split alone (exposed for tests): appends the Isolated pieces of `text`.
class RegexSplitter {
 public:
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Create(absl::string_view hf_pattern);
  ~RegexSplitter();
  // Matches and the text between them, in order, empty ones dropped (behavior "Isolated").
  void SplitIsolated(absl::string_view text, std::vector<absl::string_view>* out) const;
  // Calls `visit(begin, end, is_match)` for every match and every gap between matches.
  template <typename Visit>
  void ForEachSpan(absl::string_view text, Visit&& visit) const;

 private:
  RegexSplitter() = default;
  bool NextMatch(absl::string_view text, size_t from, size_t* begin, size_t* end) const;

  std::unique_ptr<re2::RE2> regex_;
  bool whitespace_lookahead_ = false;
};

template <typename Visit>
void RegexSplitter::ForEachSpan(absl::string_view text, Visit&& visit) const {
  size_t previous = 0, from = 0, begin, end;
  while (from <= text.size() && NextMatch(text, from, &begin, &end)) {
    if (begin > previous) visit(previous, begin, false);
    if (end > begin) visit(begin, end, true);
    previous = end;
    if (end > begin) {
      from = end;
    } else {  // an empty match: step over one character, as JavaScript's matchAll does
      from = end + 1;
      while (from < text.size() && (static_cast<uint8_t>(text[from]) & 0xC0) == 0x80) ++from;
    }
  }
  if (previous < text.size()) visit(previous, text.size(), false);
}

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_PRE_TOKENIZER_H_
