#include "tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "tokenizer/utf8.h"

namespace epinfer {
namespace {

using json = nlohmann::json;

// Unicode White_Space as RE2 class contents (Hugging Face's `\s`; RE2's own `\s` is ASCII only).
constexpr absl::string_view kWhiteSpaceRanges =
    "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"
    "\\x{3000}";

// The byte-level pre-tokenizer's own regex (GPT-2), used when ByteLevel.use_regex is true.
constexpr absl::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

constexpr absl::string_view kLookaheadIdiom = "\\s+(?!\\S)";

absl::Status Unsupported(absl::string_view pattern, size_t offset, absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat("regex \"", pattern, "\" at offset ", offset, ": ",
                                               what, " is not supported"));
}

// Length of the escape that starts at pattern[i] ('\\'), including \p{..}, \x{..}.
size_t EscapeLength(absl::string_view pattern, size_t i) {
  if (i + 1 >= pattern.size()) return 1;
  const char c = pattern[i + 1];
  if ((c == 'p' || c == 'P' || c == 'x' || c == 'u') && i + 2 < pattern.size() &&
      pattern[i + 2] == '{') {
    size_t close = pattern.find('}', i + 3);
    return close == absl::string_view::npos ? pattern.size() - i : close - i + 1;
  }
  if (c == 'u') return std::min<size_t>(6, pattern.size() - i);
  if (c == 'x') return std::min<size_t>(4, pattern.size() - i);
  // A multi-byte UTF-8 character after the backslash.
  size_t n = 2;
  while (i + n < pattern.size() && (static_cast<uint8_t>(pattern[i + n]) & 0xC0) == 0x80) ++n;
  return n;
}

// Rewrites one escape; `in_class` says whether it sits inside [...].
absl::Status TranslateEscape(absl::string_view pattern, size_t i, size_t length, bool in_class,
                             std::string* out) {
  absl::string_view escape = pattern.substr(i, length);
  if (length < 2) return Unsupported(pattern, i, "a trailing backslash");
  const char c = escape[1];
  switch (c) {
    case 's':
      absl::StrAppend(out, in_class ? "" : "[", kWhiteSpaceRanges, in_class ? "" : "]");
      return absl::OkStatus();
    case 'S':
      if (in_class) return Unsupported(pattern, i, "\\S inside a character class");
      absl::StrAppend(out, "[^", kWhiteSpaceRanges, "]");
      return absl::OkStatus();
    case 'd':
      out->append("\\p{Nd}");
      return absl::OkStatus();
    case 'D':
      if (in_class) return Unsupported(pattern, i, "\\D inside a character class");
      out->append("\\P{Nd}");
      return absl::OkStatus();
    case 'u':
      if (length == 6) {
        absl::StrAppend(out, "\\x{", escape.substr(2), "}");
        return absl::OkStatus();
      }
      if (length > 3 && escape[2] == '{') {
        absl::StrAppend(out, "\\x", escape.substr(2));
        return absl::OkStatus();
      }
      return Unsupported(pattern, i, "a malformed \\u escape");
    case 'w':
    case 'W':
    case 'b':
    case 'B':
    case 'h':
    case 'H':
    case 'G':
    case 'Z':
    case 'X':
    case 'R':
    case 'K':
      return Unsupported(pattern, i, absl::StrCat("the escape \\", std::string(1, c)));
    default:
      out->append(escape.data(), escape.size());
      return absl::OkStatus();
  }
}

// Splits the pattern at its top-level '|'.
absl::StatusOr<std::vector<absl::string_view>> TopLevelAlternatives(absl::string_view pattern) {
  std::vector<absl::string_view> alternatives;
  int depth = 0;
  bool in_class = false;
  size_t start = 0;
  for (size_t i = 0; i < pattern.size();) {
    const char c = pattern[i];
    if (c == '\\') {
      i += EscapeLength(pattern, i);
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
    } else if (c == '[') {
      in_class = true;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') ++i;
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') ++i;  // a literal ']' first
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (--depth < 0) return Unsupported(pattern, i, "an unbalanced ')'");
    } else if (c == '|' && depth == 0) {
      alternatives.push_back(pattern.substr(start, i - start));
      start = i + 1;
    }
    ++i;
  }
  if (depth != 0 || in_class) return Unsupported(pattern, pattern.size(), "an unclosed group");
  alternatives.push_back(pattern.substr(start));
  return alternatives;
}

// Rewrites one alternative (no lookaround allowed).
absl::Status TranslatePiece(absl::string_view pattern, absl::string_view piece, std::string* out) {
  const size_t base = piece.data() - pattern.data();
  bool in_class = false;
  for (size_t i = 0; i < piece.size();) {
    const char c = piece[i];
    if (c == '\\') {
      const size_t length = EscapeLength(piece, i);
      RETURN_IF_ERROR(TranslateEscape(pattern, base + i, length, in_class, out));
      i += length;
      continue;
    }
    if (in_class) {
      if (c == '[' && !(i + 1 < piece.size() && piece[i + 1] == ':')) {
        return Unsupported(pattern, base + i, "a nested character class");
      }
      if (c == ']') in_class = false;
      out->push_back(c);
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out->push_back(c);
      ++i;
      if (i < piece.size() && piece[i] == '^') out->push_back(piece[i++]);
      if (i < piece.size() && piece[i] == ']') {
        out->append("\\]");
        ++i;
      }
      continue;
    }
    if (c == '(' && absl::StartsWith(piece.substr(i), "(?")) {
      absl::string_view rest = piece.substr(i);
      if (absl::StartsWith(rest, "(?=") || absl::StartsWith(rest, "(?!") ||
          absl::StartsWith(rest, "(?<=") || absl::StartsWith(rest, "(?<!")) {
        return Unsupported(pattern, base + i,
                           "lookaround other than the `\\s+(?!\\S)|\\s+` idiom");
      }
      if (absl::StartsWith(rest, "(?>")) {  // atomic group: plain group, as the reference does
        out->append("(?:");
        i += 3;
        continue;
      }
    } else if (c == '(') {
      // Splitting needs no captures; keeping none leaves group 1 to the lookahead idiom.
      out->append("(?:");
      ++i;
      continue;
    }
    // Possessive quantifiers (`++`, `*+`, `?+`) act as greedy ones, as in the reference.
    if (c == '+' && i > 0 && (piece[i - 1] == '+' || piece[i - 1] == '*' || piece[i - 1] == '?') &&
        !(i > 1 && piece[i - 2] == '\\')) {
      ++i;
      continue;
    }
    out->push_back(c);
    ++i;
  }
  return absl::OkStatus();
}

bool IsWhiteSpaceOnly(absl::string_view text, size_t begin, size_t end, size_t* last_char) {
  size_t i = begin;
  while (i < end) {
    char32_t cp;
    const int n = DecodeUtf8At(text, i, &cp);
    if (!IsUnicodeWhiteSpace(cp)) return false;
    *last_char = i;
    i += n;
  }
  return true;
}

}  // namespace

absl::StatusOr<Re2Pattern> TranslateHfRegex(absl::string_view hf_pattern) {
  ASSIGN_OR_RETURN(std::vector<absl::string_view> alternatives, TopLevelAlternatives(hf_pattern));
  Re2Pattern result;
  for (size_t k = 0; k < alternatives.size(); ++k) {
    if (k > 0) result.pattern.push_back('|');
    if (alternatives[k] == kLookaheadIdiom) {
      if (k + 1 >= alternatives.size() || alternatives[k + 1] != "\\s+" ||
          result.whitespace_lookahead) {
        return Unsupported(hf_pattern, alternatives[k].data() - hf_pattern.data(),
                           "`\\s+(?!\\S)` not followed by the alternative `\\s+`");
      }
      absl::StrAppend(&result.pattern, "([", kWhiteSpaceRanges, "]+)");
      result.whitespace_lookahead = true;
      ++k;  // `\s+` is subsumed: the matcher gives its one-character match itself
      continue;
    }
    RETURN_IF_ERROR(TranslatePiece(hf_pattern, alternatives[k], &result.pattern));
  }
  return result;
}

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(
    absl::string_view hf_pattern) {
  ASSIGN_OR_RETURN(Re2Pattern translated, TranslateHfRegex(hf_pattern));
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(int64_t{64} << 20);  // room for the DFA of large Unicode classes
  std::unique_ptr<RegexSplitter> splitter(new RegexSplitter());
  splitter->regex_ = std::make_unique<RE2>(translated.pattern, options);
  if (!splitter->regex_->ok()) {
    return absl::InvalidArgumentError(absl::StrCat("regex \"", hf_pattern,
                                                   "\" does not compile: ",
                                                   splitter->regex_->error()));
  }
  splitter->whitespace_lookahead_ = translated.whitespace_lookahead;
  return splitter;
}

RegexSplitter::~RegexSplitter() = default;

bool RegexSplitter::NextMatch(absl::string_view text, size_t from, size_t* begin,
                              size_t* end) const {
  re2::StringPiece input(text.data(), text.size());
  re2::StringPiece match;
  // Most pieces start where the previous one ended: an anchored match is cheaper.
  if (!regex_->Match(input, from, text.size(), RE2::ANCHOR_START, &match, 1) &&
      !regex_->Match(input, from, text.size(), RE2::UNANCHORED, &match, 1)) {
    return false;
  }
  *begin = match.data() - text.data();
  *end = *begin + match.size();
  size_t last_char = 0;
  if (whitespace_lookahead_ && *end < text.size() &&
      IsWhiteSpaceOnly(text, *begin, *end, &last_char) && last_char > *begin) {
    char32_t next;
    DecodeUtf8At(text, *end, &next);
    if (!IsUnicodeWhiteSpace(next)) {
      // `\s+(?!\S)` backtracks by one character when a non-space follows; only that
      // alternative (group 1) does, so ask which one matched.
      re2::StringPiece groups[2];
      if (regex_->Match(input, *begin, text.size(), RE2::ANCHOR_START, groups, 2) &&
          groups[1].data() != nullptr) {
        *end = last_char;
      }
    }
  }
  return true;
}

void RegexSplitter::SplitIsolated(absl::string_view text,
                                  std::vector<absl::string_view>* out) const {
  ForEachSpan(text, [&](size_t b, size_t e, bool) { out->push_back(text.substr(b, e - b)); });
}

struct PreTokenizer::Step {
  enum class Kind { kSplitIsolated, kSplitRemoved, kSplitInvert, kByteLevel };
  Kind kind;
  std::unique_ptr<RegexSplitter> splitter;  // null for ByteLevel without regex
  bool add_prefix_space = false;
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const json& config) {
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  if (!config.is_null()) RETURN_IF_ERROR(pre->AddStep(config, "pre_tokenizer"));
  return pre;
}

absl::Status PreTokenizer::AddStep(const json& config, const std::string& where) {
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object with a \"type\""));
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    const json& list = config.contains("pretokenizers") ? config["pretokenizers"] : json();
    if (!list.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".pretokenizers: expected an array"));
    }
    for (size_t i = 0; i < list.size(); ++i) {
      RETURN_IF_ERROR(AddStep(list[i], absl::StrCat(where, ".pretokenizers[", i, "]")));
    }
    return absl::OkStatus();
  }
  auto step = std::make_unique<Step>();
  if (type == "Split") {
    const json& pattern = config.value("pattern", json());
    std::string regex;
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      regex = pattern["Regex"].get<std::string>();
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      regex = RE2::QuoteMeta(pattern["String"].get<std::string>());
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}"));
    }
    RETURN_IF_ERROR(ValidateUtf8(regex, absl::StrCat(where, ".pattern")));
    auto splitter = RegexSplitter::Create(regex);
    if (!splitter.ok()) {
      return absl::Status(splitter.status().code(),
                          absl::StrCat(where, ".pattern: ", splitter.status().message()));
    }
    step->splitter = std::move(*splitter);
    const std::string behavior = config.value("behavior", std::string("Isolated"));
    const bool invert = config.value("invert", false);
    if (invert) {
      step->kind = Step::Kind::kSplitInvert;
    } else if (behavior == "Isolated") {
      step->kind = Step::Kind::kSplitIsolated;
    } else if (behavior == "Removed") {
      step->kind = Step::Kind::kSplitRemoved;
    } else {
      return absl::UnimplementedError(
          absl::StrCat(where, ".behavior: \"", behavior, "\" is not supported (Isolated, Removed)"));
    }
  } else if (type == "ByteLevel") {
    step->kind = Step::Kind::kByteLevel;
    step->add_prefix_space = config.value("add_prefix_space", false);
    if (config.value("use_regex", true)) {
      ASSIGN_OR_RETURN(step->splitter, RegexSplitter::Create(kGpt2Pattern));
    }
    has_byte_level_ = true;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        where, ".type: \"", type, "\" is not supported (Sequence, Split, ByteLevel)"));
  }
  steps_.push_back(std::move(step));
  return absl::OkStatus();
}

void PreTokenizer::Split(absl::string_view text, PreTokenizedText* out) const {
  out->pieces.clear();
  out->pieces.push_back(text);
  std::vector<absl::string_view> next;
  for (const auto& step : steps_) {
    next.clear();
    for (absl::string_view piece : out->pieces) {
      if (step->kind == Step::Kind::kByteLevel && step->add_prefix_space &&
          !absl::StartsWith(piece, " ")) {
        out->owned.push_back(absl::StrCat(" ", piece));
        piece = out->owned.back();
      }
      if (step->splitter == nullptr) {
        next.push_back(piece);
        continue;
      }
      const Step::Kind kind = step->kind;
      step->splitter->ForEachSpan(piece, [&](size_t b, size_t e, bool is_match) {
        // ByteLevel keeps only the matches of its regex, like an inverted Split.
        const bool keep = kind == Step::Kind::kSplitRemoved   ? !is_match
                          : kind == Step::Kind::kSplitIsolated ? true
                                                               : is_match;
        if (keep) next.push_back(piece.substr(b, e - b));
      });
    }
    out->pieces.swap(next);
  }
}

}  // namespace epinfer
