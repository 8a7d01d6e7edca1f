#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace epinfer {
namespace {

using json = nlohmann::json;

// Largest id a tokenizer.json may use: keeps a malformed file from allocating gigabytes.
constexpr int64_t kMaxTokenId = 1 << 24;

absl::Status Malformed(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("model.", where, ": ", what));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const json& model) {
  if (!model.is_object()) return Malformed("", "expected an object");
  if (model.value("type", std::string("BPE")) != "BPE") {
    return absl::UnimplementedError(absl::StrCat(
        "model.type: \"", model["type"].dump(), "\" is not supported (only byte-level BPE)"));
  }
  if (model.value("byte_fallback", false)) {
    return absl::UnimplementedError("model.byte_fallback: true is not supported (byte-level BPE)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() &&
        !(model[key].is_string() && model[key].get<std::string>().empty())) {
      return absl::UnimplementedError(absl::StrCat("model.", key, " is not supported"));
    }
  }
  auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
  bpe->ignore_merges_ = model.value("ignore_merges", false);

  const json& vocab = model.contains("vocab") ? model["vocab"] : json();
  if (!vocab.is_object()) return Malformed("vocab", "expected an object of token -> id");
  std::vector<std::pair<int32_t, std::string>> entries;
  entries.reserve(vocab.size());
  int32_t limit = 0;
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      return Malformed(absl::StrCat("vocab[\"", it.key(), "\"]"), "expected an integer id");
    }
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= kMaxTokenId) {
      return Malformed(absl::StrCat("vocab[\"", it.key(), "\"]"),
                       absl::StrCat("id ", id, " is out of range [0, ", kMaxTokenId, ")"));
    }
    limit = std::max<int32_t>(limit, static_cast<int32_t>(id) + 1);
    entries.emplace_back(static_cast<int32_t>(id), it.key());
  }
  bpe->id_to_bytes_.resize(limit);
  bpe->has_id_.assign(limit, false);
  std::fill(std::begin(bpe->byte_ids_), std::end(bpe->byte_ids_), -1);
  for (const auto& [id, token] : entries) {
    if (bpe->has_id_[id]) {
      return Malformed(absl::StrCat("vocab[\"", token, "\"]"),
                       absl::StrCat("id ", id, " is used twice"));
    }
    bpe->has_id_[id] = true;
    // A token outside the byte-level alphabet can never come out of the merges; it decodes as
    // its own text.
    if (!ByteLevelToBytes(token, &bytes)) {
      bpe->id_to_bytes_[id] = token;
      continue;
    }
    bpe->id_to_bytes_[id] = bytes;
    bpe->bytes_to_id_.emplace(bytes, id);
    if (bytes.size() == 1) bpe->byte_ids_[static_cast<uint8_t>(bytes[0])] = id;
  }

  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    auto it = vocab.find(unk);
    if (it == vocab.end()) return Malformed("unk_token", absl::StrCat("\"", unk, "\" is not in the vocab"));
    bpe->unk_id_ = it.value().get<int32_t>();
  }

  const json& merges = model.contains("merges") ? model["merges"] : json::array();
  if (!merges.is_array()) return Malformed("merges", "expected an array");
  bpe->merges_.reserve(merges.size());
  std::string left_bytes, right_bytes;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {
      const std::string text = merge.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return Malformed(absl::StrCat("merges[", rank, "]"),
                         absl::StrCat("\"", text, "\" is not two tokens separated by one space"));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return Malformed(absl::StrCat("merges[", rank, "]"),
                       "expected \"a b\" or [\"a\", \"b\"]");
    }
    if (!ByteLevelToBytes(left, &left_bytes) || !ByteLevelToBytes(right, &right_bytes)) {
      return Malformed(absl::StrCat("merges[", rank, "]"),
                       "has a character outside the byte-level alphabet");
    }
    auto l = bpe->bytes_to_id_.find(left_bytes);
    auto r = bpe->bytes_to_id_.find(right_bytes);
    auto m = bpe->bytes_to_id_.find(left_bytes + right_bytes);
    if (l == bpe->bytes_to_id_.end() || r == bpe->bytes_to_id_.end() ||
        m == bpe->bytes_to_id_.end()) {
      return Malformed(absl::StrCat("merges[", rank, "]"),
                       absl::StrCat("\"", left, "\", \"", right, "\" or their merge \"", left,
                                    right, "\" is not in the vocab"));
    }
    // A pair listed twice keeps its last rank, as the reference's map does.
    bpe->merges_[PairKey(l->second, r->second)] = Merge{static_cast<int32_t>(rank), m->second};
  }
  return bpe;
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

const std::string* BpeModel::TokenBytes(int32_t id) const {
  if (id < 0 || id >= id_limit() || !has_id_[id]) return nullptr;
  return &id_to_bytes_[id];
}

std::optional<int32_t> BpeModel::TokenId(absl::string_view bytes) const {
  auto it = bytes_to_id_.find(bytes);
  if (it == bytes_to_id_.end()) return std::nullopt;
  return it->second;
}

absl::Status BpeModel::EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    if (auto it = bytes_to_id_.find(piece); it != bytes_to_id_.end()) {
      ids->push_back(it->second);
      return absl::OkStatus();
    }
  }
  if (piece.size() == 1 && byte_ids_[static_cast<uint8_t>(piece[0])] >= 0) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
    return absl::OkStatus();
  }
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // index of the left symbol: its first byte's position, for leftmost ties
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  const int32_t n = static_cast<int32_t>(piece.size());
  symbols.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    int32_t id = byte_ids_[static_cast<uint8_t>(piece[i])];
    if (id < 0) {
      if (!unk_id_) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "byte 0x%02X has no token in the vocab and the model has no unk_token",
            static_cast<uint8_t>(piece[i])));
      }
      id = *unk_id_;
    }
    symbols[i] = Symbol{id, i - 1, i + 1 < n ? i + 1 : -1};
  }
  auto greater = [](const Candidate& a, const Candidate& b) { return a > b; };
  auto consider = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    if (const Merge* m = FindMerge(symbols[left].id, symbols[right].id)) {
      heap.push_back(Candidate{m->rank, left});
      std::push_heap(heap.begin(), heap.end(), greater);
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), greater);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.left];
    if (left.id < 0 || left.next < 0) continue;  // merged away since it was queued
    const Merge* m = FindMerge(left.id, symbols[left.next].id);
    if (m == nullptr || m->rank != top.rank) continue;  // stale: a neighbour changed
    Symbol& right = symbols[left.next];
    left.id = m->merged_id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.left;
    if (left.prev >= 0) consider(left.prev);
    consider(top.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
  return absl::OkStatus();
}

}  // namespace epinfer
