#include "tokenizer/trainer.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace epinfer {
namespace {

using ordered_json = nlohmann::ordered_json;

// DeepSeek-V3 tokenizer.json "pre_tokenizer", verbatim.
constexpr const char* kDeepSeekV3PreTokenizer = R"json({"type": "Sequence", "pretokenizers": [
  {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
  {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"}, "behavior": "Isolated", "invert": false},
  {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
  {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})json";

struct AddedTokenSpec {
  const char* content;
  bool special;
  bool normalized = true;
};
// DeepSeek-V3 ids 0-2, then (after the BPE vocabulary) R1's think tags and V3's added tokens in
// DeepSeek's order.
constexpr AddedTokenSpec kLeadingTokens[] = {
    {"<｜begin▁of▁sentence｜>", true, false},
    {"<｜end▁of▁sentence｜>", true, false},
    {"<｜▁pad▁｜>", true, false}};
constexpr AddedTokenSpec kTrailingTokens[] = {
    {"<think>", false},          {"</think>", false},
    {"<｜fim▁hole｜>", false},     {"<｜fim▁begin｜>", false},
    {"<｜fim▁end｜>", false},      {"<｜User｜>", false},
    {"<｜Assistant｜>", false},    {"<|EOT|>", true},
    {"<｜tool▁calls▁begin｜>", false}, {"<｜tool▁calls▁end｜>", false},
    {"<｜tool▁call▁begin｜>", false},  {"<｜tool▁call▁end｜>", false},
    {"<｜tool▁outputs▁begin｜>", false}, {"<｜tool▁outputs▁end｜>", false},
    {"<｜tool▁output▁begin｜>", false},  {"<｜tool▁output▁end｜>", false},
    {"<｜tool▁sep｜>", false}};
constexpr int kNumLeading = std::size(kLeadingTokens);
constexpr int kNumTrailing = std::size(kTrailingTokens);
constexpr int kMinVocabSize = kNumLeading + 256 + kNumTrailing;
constexpr int kMaxVocabSize = 1 << 20;

using Pair = std::pair<int32_t, int32_t>;

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

ordered_json AddedTokenJson(int32_t id, const AddedTokenSpec& spec) {
  ordered_json token;
  token["id"] = id;
  token["content"] = spec.content;
  token["single_word"] = false;
  token["lstrip"] = false;
  token["rstrip"] = false;
  token["normalized"] = spec.normalized;
  token["special"] = spec.special;
  return token;
}

ordered_json ConfigTokenJson(const char* content) {
  ordered_json token;
  token["__type"] = "AddedToken";
  token["content"] = content;
  token["lstrip"] = false;
  token["normalized"] = true;
  token["rstrip"] = false;
  token["single_word"] = false;
  return token;
}

absl::Status WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    return absl::InternalError(absl::StrCat("cannot write ", path.string(), ": ",
                                            std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TrainedTokenizer> TrainByteLevelBpe(absl::string_view corpus_text,
                                                   int vocab_size) {
  if (vocab_size < kMinVocabSize || vocab_size > kMaxVocabSize) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size: ", vocab_size, " is outside [",
                                                   kMinVocabSize, ", ", kMaxVocabSize, "]"));
  }
  RETURN_IF_ERROR(ValidateUtf8(corpus_text, "tokenizer corpus"));
  const ordered_json pre_tokenizer_config = ordered_json::parse(kDeepSeekV3PreTokenizer);
  ASSIGN_OR_RETURN(std::unique_ptr<PreTokenizer> pre_tokenizer,
                   PreTokenizer::FromJson(nlohmann::json::parse(kDeepSeekV3PreTokenizer)));

  // Words and their counts, with the same pre-tokenizer that encoding uses.
  absl::flat_hash_map<std::string, int64_t> word_counts;
  PreTokenizedText pieces;
  pre_tokenizer->Split(corpus_text, &pieces);
  for (absl::string_view piece : pieces.pieces) ++word_counts[piece];
  std::vector<std::pair<std::string, int64_t>> sorted_words(word_counts.begin(),
                                                            word_counts.end());
  std::sort(sorted_words.begin(), sorted_words.end());  // a deterministic order

  // The vocabulary in raw bytes: ids 3..258 are the bytes.
  std::vector<std::string> token_bytes;
  absl::flat_hash_map<std::string, int32_t> id_of_bytes;
  for (int b = 0; b < 256; ++b) {
    token_bytes.emplace_back(1, static_cast<char>(b));
    id_of_bytes[token_bytes.back()] = kNumLeading + b;
  }
  auto bytes_of = [&](int32_t id) -> const std::string& { return token_bytes[id - kNumLeading]; };

  std::vector<Word> words;
  words.reserve(sorted_words.size());
  for (const auto& [text, count] : sorted_words) {
    Word word{{}, count};
    for (char c : text) word.symbols.push_back(kNumLeading + static_cast<uint8_t>(c));
    words.push_back(std::move(word));
  }

  absl::flat_hash_map<Pair, int64_t> pair_counts;
  absl::flat_hash_map<Pair, absl::flat_hash_set<int32_t>> pair_words;
  auto add_pairs = [&](int32_t w, int64_t sign) {
    const Word& word = words[w];
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const Pair pair{word.symbols[i], word.symbols[i + 1]};
      pair_counts[pair] += sign * word.count;
      if (sign > 0) pair_words[pair].insert(w);
    }
  };
  for (int32_t w = 0; w < static_cast<int32_t>(words.size()); ++w) add_pairs(w, +1);

  // Highest count first; ties to the smaller pair of ids. Stale entries are skipped on pop.
  using Entry = std::tuple<int64_t, int32_t, int32_t>;  // count, -left, -right
  std::priority_queue<Entry> queue;
  for (const auto& [pair, count] : pair_counts) queue.emplace(count, -pair.first, -pair.second);

  const int max_new_tokens = vocab_size - kMinVocabSize;
  std::vector<std::pair<std::string, std::string>> merges;  // byte-level spellings
  int new_tokens = 0;
  while (new_tokens < max_new_tokens && !queue.empty()) {
    auto [count, neg_left, neg_right] = queue.top();
    queue.pop();
    const Pair pair{-neg_left, -neg_right};
    auto current = pair_counts.find(pair);
    if (current == pair_counts.end() || current->second != count) continue;
    if (count < 2) break;
    const std::string merged = bytes_of(pair.first) + bytes_of(pair.second);
    int32_t merged_id;
    if (auto it = id_of_bytes.find(merged); it != id_of_bytes.end()) {
      merged_id = it->second;  // another merge path already made this token
    } else {
      merged_id = kNumLeading + static_cast<int32_t>(token_bytes.size());
      token_bytes.push_back(merged);
      id_of_bytes[merged] = merged_id;
      ++new_tokens;
    }
    merges.emplace_back(BytesToByteLevel(bytes_of(pair.first)),
                        BytesToByteLevel(bytes_of(pair.second)));

    std::vector<int32_t> affected(pair_words[pair].begin(), pair_words[pair].end());
    std::sort(affected.begin(), affected.end());
    absl::flat_hash_set<Pair> touched;
    for (int32_t w : affected) {
      Word& word = words[w];
      bool present = false;
      for (size_t i = 0; i + 1 < word.symbols.size() && !present; ++i) {
        present = word.symbols[i] == pair.first && word.symbols[i + 1] == pair.second;
      }
      if (!present) continue;
      for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
        touched.insert({word.symbols[i], word.symbols[i + 1]});
      }
      add_pairs(w, -1);
      std::vector<int32_t> next;
      next.reserve(word.symbols.size());
      for (size_t i = 0; i < word.symbols.size();) {
        if (i + 1 < word.symbols.size() && word.symbols[i] == pair.first &&
            word.symbols[i + 1] == pair.second) {
          next.push_back(merged_id);
          i += 2;
        } else {
          next.push_back(word.symbols[i++]);
        }
      }
      word.symbols.swap(next);
      add_pairs(w, +1);
      for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
        touched.insert({word.symbols[i], word.symbols[i + 1]});
      }
    }
    for (const Pair& p : touched) {
      auto it = pair_counts.find(p);
      if (it == pair_counts.end()) continue;
      if (it->second <= 0) {
        pair_counts.erase(it);
        continue;
      }
      queue.emplace(it->second, -p.first, -p.second);
    }
  }

  // tokenizer.json, laid out as DeepSeek's.
  ordered_json tokenizer;
  tokenizer["version"] = "1.0";
  tokenizer["truncation"] = nullptr;
  tokenizer["padding"] = nullptr;
  ordered_json added = ordered_json::array();
  for (int i = 0; i < kNumLeading; ++i) added.push_back(AddedTokenJson(i, kLeadingTokens[i]));
  const int32_t first_trailing = kNumLeading + static_cast<int32_t>(token_bytes.size());
  for (int i = 0; i < kNumTrailing; ++i) {
    added.push_back(AddedTokenJson(first_trailing + i, kTrailingTokens[i]));
  }
  tokenizer["added_tokens"] = added;
  tokenizer["normalizer"] = {{"type", "Sequence"}, {"normalizers", ordered_json::array()}};
  tokenizer["pre_tokenizer"] = pre_tokenizer_config;
  tokenizer["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true},
                                 {"trim_offsets", false}, {"use_regex", true}};
  tokenizer["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true},
                          {"trim_offsets", true}, {"use_regex", true}};
  ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  ordered_json vocab = ordered_json::object();
  for (int i = 0; i < kNumLeading; ++i) vocab[kLeadingTokens[i].content] = i;
  for (size_t i = 0; i < token_bytes.size(); ++i) {
    vocab[BytesToByteLevel(token_bytes[i])] = kNumLeading + static_cast<int32_t>(i);
  }
  model["vocab"] = vocab;
  ordered_json merge_list = ordered_json::array();
  for (const auto& [left, right] : merges) merge_list.push_back(absl::StrCat(left, " ", right));
  model["merges"] = merge_list;
  tokenizer["model"] = model;

  ordered_json config;
  config["add_bos_token"] = true;
  config["add_eos_token"] = false;
  config["bos_token"] = ConfigTokenJson(kLeadingTokens[0].content);
  config["clean_up_tokenization_spaces"] = false;
  config["eos_token"] = ConfigTokenJson(kLeadingTokens[1].content);
  config["legacy"] = true;
  config["model_max_length"] = 131072;
  config["pad_token"] = ConfigTokenJson(kLeadingTokens[1].content);
  config["sp_model_kwargs"] = ordered_json::object();
  config["unk_token"] = nullptr;
  config["tokenizer_class"] = "LlamaTokenizerFast";
  config["chat_template"] = std::string(kDeepSeekV3ChatTemplate);

  TrainedTokenizer result;
  result.tokenizer_json = tokenizer.dump(2);
  result.tokenizer_config_json = config.dump(2);
  result.num_tokens = first_trailing + kNumTrailing;
  return result;
}

absl::Status TrainTokenizer(const std::string& corpus_text, int vocab_size,
                            const std::string& out_dir) {
  ASSIGN_OR_RETURN(TrainedTokenizer trained, TrainByteLevelBpe(corpus_text, vocab_size));
  std::error_code error;
  std::filesystem::create_directories(out_dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", error.message()));
  }
  RETURN_IF_ERROR(
      WriteFile(std::filesystem::path(out_dir) / "tokenizer.json", trained.tokenizer_json));
  return WriteFile(std::filesystem::path(out_dir) / "tokenizer_config.json",
                   trained.tokenizer_config_json);
}

}  // namespace epinfer
