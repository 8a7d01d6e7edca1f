#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace epinfer {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxAddedTokenId = 1 << 24;

// JavaScript's String.prototype.trim set (WhiteSpace + LineTerminator): the reference strips
// these around added tokens with lstrip/rstrip.
bool IsTrimSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

absl::string_view TrimStart(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    char32_t cp;
    const int n = DecodeUtf8At(text, i, &cp);
    if (!IsTrimSpace(cp)) break;
    i += n;
  }
  return text.substr(i);
}

absl::string_view TrimEnd(absl::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    char32_t cp;
    DecodeUtf8At(text, start, &cp);
    if (!IsTrimSpace(cp)) break;
    end = start;
  }
  return text.substr(0, end);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return buffer.str();
}

bool IsDirectory(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

absl::StatusOr<json> ParseJson(absl::string_view text, absl::string_view what) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  }
}

// tokenizer_config.json writes special tokens as "text" or {"content": "text", ...}.
std::string TokenContent(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return "";
}

}  // namespace

void Tokenizer::AddedTokenTrie::Insert(absl::string_view content, int32_t token_index) {
  int32_t node = 0;
  for (char c : content) {
    const auto byte = static_cast<uint8_t>(c);
    int32_t child = -1;
    for (const auto& [b, index] : nodes_[node].children) {
      if (b == byte) child = index;
    }
    if (child < 0) {
      child = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(byte, child);
      nodes_.emplace_back();
    }
    node = child;
  }
  nodes_[node].token = token_index;
  first_byte_[static_cast<uint8_t>(content[0])] = true;
}

int32_t Tokenizer::AddedTokenTrie::Match(absl::string_view text, size_t pos,
                                         size_t* length) const {
  if (!first_byte_[static_cast<uint8_t>(text[pos])]) return -1;
  int32_t node = 0, found = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    int32_t child = -1;
    for (const auto& [b, index] : nodes_[node].children) {
      if (b == byte) {
        child = index;
        break;
      }
    }
    if (child < 0) break;
    node = child;
    if (nodes_[node].token >= 0) {
      found = nodes_[node].token;
      *length = i + 1 - pos;
    }
  }
  return found;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::string tokenizer_path = path, config_path;
  if (IsDirectory(path)) {
    tokenizer_path = path + "/tokenizer.json";
    config_path = path + "/tokenizer_config.json";
  } else {
    const size_t slash = path.rfind('/');
    config_path = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) +
                  "tokenizer_config.json";
  }
  ASSIGN_OR_RETURN(std::string tokenizer_json, ReadFile(tokenizer_path));
  std::string config_json;
  if (Exists(config_path)) {
    ASSIGN_OR_RETURN(config_json, ReadFile(config_path));
  }
  auto tokenizer = FromJson(tokenizer_json, config_json);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(tokenizer_path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view tokenizer_json,
                                                               absl::string_view config_json) {
  ASSIGN_OR_RETURN(json root, ParseJson(tokenizer_json, "tokenizer.json"));
  if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json: expected an object");
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  // nlohmann::json throws on a type mismatch the checks below missed; it stops here.
  try {
    if (!root.contains("model")) return absl::InvalidArgumentError("model: missing");
    ASSIGN_OR_RETURN(tokenizer->model_, BpeModel::FromJson(root["model"]));
    tokenizer->id_limit_ = tokenizer->model_->id_limit();
    RETURN_IF_ERROR(tokenizer->LoadNormalizer(root.value("normalizer", json()), "normalizer"));
    ASSIGN_OR_RETURN(tokenizer->pre_tokenizer_,
                     PreTokenizer::FromJson(root.value("pre_tokenizer", json())));
    if (!tokenizer->pre_tokenizer_->has_byte_level()) {
      return absl::UnimplementedError(
          "pre_tokenizer: no ByteLevel step; only byte-level BPE tokenizers are supported");
    }
    const json decoder = root.value("decoder", json());
    if (!decoder.is_object() || decoder.value("type", std::string()) != "ByteLevel") {
      return absl::UnimplementedError(
          absl::StrCat("decoder: ", decoder.dump(), " is not supported (ByteLevel)"));
    }
    RETURN_IF_ERROR(tokenizer->LoadAddedTokens(root.value("added_tokens", json::array())));
    RETURN_IF_ERROR(tokenizer->LoadPostProcessor(root.value("post_processor", json())));
    RETURN_IF_ERROR(tokenizer->LoadConfig(config_json));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
  return tokenizer;
}

absl::Status Tokenizer::LoadNormalizer(const json& normalizer, const std::string& where) {
  if (normalizer.is_null()) return absl::OkStatus();
  has_normalizer_ = true;
  const std::string type = normalizer.is_object() ? normalizer.value("type", std::string()) : "";
  if (type != "Sequence") {
    // Only normalizers that leave text as it is are implemented (DeepSeek's is an empty Sequence).
    return absl::UnimplementedError(
        absl::StrCat(where, ": ", normalizer.dump(), " is not supported (only Sequence)"));
  }
  const json& list = normalizer.contains("normalizers") ? normalizer["normalizers"] : json();
  if (!list.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".normalizers: expected an array"));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    RETURN_IF_ERROR(LoadNormalizer(list[i], absl::StrCat(where, ".normalizers[", i, "]")));
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::LoadAddedTokens(const json& list) {
  if (!list.is_array()) return absl::InvalidArgumentError("added_tokens: expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const json& entry = list[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
        !entry.contains("content") || !entry["content"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected {\"id\": integer, \"content\": string, ...}"));
    }
    AddedToken token;
    const int64_t id = entry["id"].get<int64_t>();
    if (id < 0 || id >= kMaxAddedTokenId) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".id: ", id, " is out of range"));
    }
    token.id = static_cast<int32_t>(id);
    token.content = entry["content"].get<std::string>();
    if (token.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".content: empty"));
    }
    token.special = entry.value("special", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    const bool normalized = entry.value("normalized", !token.special);
    const auto index = static_cast<int32_t>(added_tokens_.size());
    added_tokens_.push_back(token);
    added_by_id_[token.id] = index;
    added_by_content_[token.content] = index;
    (normalized && has_normalizer_ ? normalized_tokens_ : raw_tokens_).Insert(token.content, index);
    id_limit_ = std::max(id_limit_, token.id + 1);
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::LoadPostProcessor(const json& processor) {
  if (processor.is_null()) return absl::OkStatus();
  const std::string type = processor.is_object() ? processor.value("type", std::string()) : "";
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only; ids are unchanged
  if (type != "TemplateProcessing") {
    return absl::UnimplementedError(absl::StrCat(
        "post_processor.type: \"", type, "\" is not supported (ByteLevel, TemplateProcessing)"));
  }
  const json& single = processor.contains("single") ? processor["single"] : json();
  if (!single.is_array()) {
    return absl::InvalidArgumentError("post_processor.single: expected an array");
  }
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const json& item = single[i];
    if (item.is_object() && item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!item.is_object() || !item.contains("SpecialToken") ||
        !item["SpecialToken"].is_object() || !item["SpecialToken"].contains("id") ||
        !item["SpecialToken"]["id"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "post_processor.single[", i, "]: expected {\"SpecialToken\": {\"id\": ...}} or "
          "{\"Sequence\": ...}"));
    }
    const std::string token = item["SpecialToken"]["id"].get<std::string>();
    std::optional<int32_t> id = TokenToId(token);
    if (!id) {
      return absl::InvalidArgumentError(absl::StrCat("post_processor.single[", i,
                                                     "]: unknown special token \"", token, "\""));
    }
    (seen_sequence ? suffix_ids_ : prefix_ids_).push_back(*id);
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::LoadConfig(absl::string_view config_json) {
  if (config_json.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(json config, ParseJson(config_json, "tokenizer_config.json"));
  if (!config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
  }
  const json& chat_template = config.value("chat_template", json());
  if (chat_template.is_string()) {
    config_.chat_template = chat_template.get<std::string>();
  } else if (chat_template.is_array()) {  // [{"name": ..., "template": ...}]: take "default"
    for (const json& entry : chat_template) {
      if (entry.is_object() && entry.value("name", std::string()) == "default" &&
          entry.contains("template") && entry["template"].is_string()) {
        config_.chat_template = entry["template"].get<std::string>();
      }
    }
  }
  config_.bos_token = TokenContent(config.value("bos_token", json()));
  config_.eos_token = TokenContent(config.value("eos_token", json()));
  for (auto [content, id] : {std::pair{&config_.bos_token, &bos_id_},
                             std::pair{&config_.eos_token, &eos_id_}}) {
    if (content->empty()) continue;
    *id = TokenToId(*content);
    if (!*id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer_config.json: unknown special token \"", *content, "\""));
    }
  }
  return absl::OkStatus();
}

const AddedToken* Tokenizer::FindAddedToken(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it == added_by_id_.end() ? nullptr : &added_tokens_[it->second];
}

absl::StatusOr<int32_t> Tokenizer::SpecialTokenId(absl::string_view content) const {
  auto it = added_by_content_.find(content);
  if (it == added_by_content_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown special token \"", content, "\""));
  }
  return added_tokens_[it->second].id;
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_by_content_.find(token); it != added_by_content_.end()) {
    return added_tokens_[it->second].id;
  }
  std::string bytes;
  if (!ByteLevelToBytes(token, &bytes)) return std::nullopt;
  return model_->TokenId(bytes);
}

absl::Status Tokenizer::EncodeSection(absl::string_view text, PreTokenizedText* scratch,
                                      std::vector<int32_t>* ids, size_t max_tokens) const {
  if (text.empty()) return absl::OkStatus();
  pre_tokenizer_->Split(text, scratch);
  for (absl::string_view piece : scratch->pieces) {
    RETURN_IF_ERROR(model_->EncodePiece(piece, ids));
    if (max_tokens != 0 && ids->size() > max_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("text is longer than the limit of ", max_tokens, " tokens"));
    }
  }
  scratch->owned.clear();
  return absl::OkStatus();
}

template <typename Section>
absl::Status Tokenizer::SplitAtAddedTokens(absl::string_view text, const AddedTokenTrie& trie,
                                           std::vector<int32_t>* ids, Section&& section) const {
  size_t start = 0, i = 0;
  bool strip_next = false;  // the previous token had rstrip
  while (i < text.size()) {
    size_t length = 0;
    const int32_t index = trie.empty() ? -1 : trie.Match(text, i, &length);
    if (index < 0) {
      ++i;
      continue;
    }
    const AddedToken& token = added_tokens_[index];
    absl::string_view before = text.substr(start, i - start);
    if (strip_next) before = TrimStart(before);
    if (token.lstrip) before = TrimEnd(before);
    RETURN_IF_ERROR(section(before));
    ids->push_back(token.id);
    i += length;
    start = i;
    strip_next = token.rstrip;
  }
  absl::string_view rest = text.substr(start);
  if (strip_next) rest = TrimStart(rest);
  return section(rest);
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       const EncodeOptions& options) const {
  RETURN_IF_ERROR(ValidateUtf8(text, "text"));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (options.add_special_tokens) ids = prefix_ids_;
  PreTokenizedText scratch;
  auto plain = [&](absl::string_view section) {
    return EncodeSection(section, &scratch, &ids, options.max_tokens);
  };
  if (!options.allow_special_tokens) {
    RETURN_IF_ERROR(plain(text));
  } else {
    RETURN_IF_ERROR(SplitAtAddedTokens(text, raw_tokens_, &ids, [&](absl::string_view section) {
      return SplitAtAddedTokens(section, normalized_tokens_, &ids, plain);
    }));
  }
  if (options.add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  if (options.max_tokens != 0 && ids.size() > options.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is ", ids.size(), " tokens, over the limit of ", options.max_tokens));
  }
  return ids;
}

absl::Status Tokenizer::AppendTokenText(int32_t id, bool skip_special_tokens,
                                        Utf8StreamDecoder* utf8, std::string* out) const {
  if (const AddedToken* token = FindAddedToken(id)) {
    // The reference drops skipped tokens before decoding: bytes on both sides still join.
    if (token->special && skip_special_tokens) return absl::OkStatus();
    utf8->Flush(out);
    out->append(token->content);
    return absl::OkStatus();
  }
  const std::string* bytes = model_->TokenBytes(id);
  if (bytes == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is not in the vocabulary (ids are below ", id_limit_, ")"));
  }
  utf8->Push(*bytes, out);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::string out;
  Utf8StreamDecoder utf8;
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::Status status = AppendTokenText(ids[i], skip_special_tokens, &utf8, &out);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: ", status.message()));
    }
  }
  utf8.Flush(&out);
  return out;
}

}  // namespace epinfer
