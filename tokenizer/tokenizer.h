#ifndef EPINFER_TOKENIZER_TOKENIZER_H_
#define EPINFER_TOKENIZER_TOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/pre_tokenizer.h"

namespace epinfer {

class Utf8StreamDecoder;

// An entry of tokenizer.json "added_tokens": matched in text before pre-tokenization.
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;  // skipped by Decode(skip_special_tokens)
  bool lstrip = false;   // eats the whitespace on its left
  bool rstrip = false;   // eats the whitespace on its right
};

struct EncodeOptions {
  // Recognise added tokens ("<｜User｜>", "<｜end▁of▁sentence｜>", ...) written in the text. Off by
  // default: text from users is text, so it cannot forge control tokens.
  bool allow_special_tokens = false;
  // Apply tokenizer.json's post_processor (TemplateProcessing: BOS/EOS around the text).
  bool add_special_tokens = false;
  // More tokens than this is INVALID_ARGUMENT ("over-long input"); 0 means no limit.
  size_t max_tokens = 0;
};

// What tokenizer_config.json says beside tokenizer.json (all optional).
struct TokenizerConfig {
  std::string chat_template;  // "" when there is none
  std::string bos_token;
  std::string eos_token;
};

// A Hugging Face byte-level BPE tokenizer (tokenizer.json): added tokens, normalizer (identity
// ones only), pre-tokenizer, BPE model, post-processor and ByteLevel decoder. Immutable after
// loading and safe to share between threads.
class Tokenizer {
 public:
  // `tokenizer_json` is the text of tokenizer.json; `config_json` that of tokenizer_config.json,
  // or empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view tokenizer_json,
                                                             absl::string_view config_json);
  // `path` is a tokenizer.json file or a directory holding tokenizer.json (and, if present,
  // tokenizer_config.json).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);

  // Text (valid UTF-8, else INVALID_ARGUMENT with the byte offset) to token ids.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              const EncodeOptions& options = {}) const;

  // Token ids to text; an id that is not in the vocabulary is INVALID_ARGUMENT naming its index.
  // Bytes that do not form UTF-8 become U+FFFD (WHATWG decoding), as in the reference.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;

  // Appends the text of one token: a vocab token's bytes go through `utf8` (which holds an
  // unfinished character); an added token flushes `utf8` and appends its content. Decode and
  // StreamDecoder are both made of this.
  absl::Status AppendTokenText(int32_t id, bool skip_special_tokens, Utf8StreamDecoder* utf8,
                               std::string* out) const;

  // The id of an added token, by content. NOT_FOUND "unknown special token" otherwise.
  absl::StatusOr<int32_t> SpecialTokenId(absl::string_view content) const;
  // The id of any token given in the vocab's own (byte-level) spelling, or an added token.
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }
  const AddedToken* FindAddedToken(int32_t id) const;
  const TokenizerConfig& config() const { return config_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  // One past the largest id (model vocab and added tokens).
  int32_t id_limit() const { return id_limit_; }

 private:
  Tokenizer() = default;
  absl::Status LoadAddedTokens(const nlohmann::json& list);
  absl::Status LoadNormalizer(const nlohmann::json& normalizer, const std::string& where);
  absl::Status LoadPostProcessor(const nlohmann::json& processor);
  absl::Status LoadConfig(absl::string_view config_json);
  // Appends ids of text that has no added tokens in it.
  absl::Status EncodeSection(absl::string_view text, PreTokenizedText* scratch,
                             std::vector<int32_t>* ids, size_t max_tokens) const;
  // Added tokens by content, longest match first (leftmost-longest, as the reference splits).
  class AddedTokenTrie {
   public:
    void Insert(absl::string_view content, int32_t token_index);
    // Index into added_tokens_ of the longest token starting at text[pos], or -1.
    int32_t Match(absl::string_view text, size_t pos, size_t* length) const;
    bool empty() const { return nodes_.size() <= 1; }

   private:
    struct Node {
      std::vector<std::pair<uint8_t, int32_t>> children;
      int32_t token = -1;
    };
    std::vector<Node> nodes_ = std::vector<Node>(1);
    bool first_byte_[256] = {};
  };
  // Splits `text` at the tokens of `trie`; text between them goes to `section`.
  template <typename Section>
  absl::Status SplitAtAddedTokens(absl::string_view text, const AddedTokenTrie& trie,
                                  std::vector<int32_t>* ids, Section&& section) const;

  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::vector<AddedToken> added_tokens_;
  absl::flat_hash_map<int32_t, size_t> added_by_id_;
  absl::flat_hash_map<std::string, size_t> added_by_content_;
  // The reference matches tokens with normalized=false in the raw text first, then the others
  // in each normalized section; with identity normalizers that is two passes over the text.
  AddedTokenTrie raw_tokens_, normalized_tokens_;
  bool has_normalizer_ = false;
  std::vector<int32_t> prefix_ids_, suffix_ids_;  // TemplateProcessing around the text
  TokenizerConfig config_;
  std::optional<int32_t> bos_id_, eos_id_;
  int32_t id_limit_ = 0;
};

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_TOKENIZER_H_
