#ifndef EPINFER_TOKENIZER_BPE_MODEL_H_
#define EPINFER_TOKENIZER_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace epinfer {

// The "model" of a byte-level BPE tokenizer.json: vocab (token -> id) and merges, both written
// in the byte-level alphabet, applied here to raw bytes. Immutable after loading, so one model
// serves any number of threads.
class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object; merges may be "a b" strings or ["a", "b"] pairs.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece of raw bytes: start from single bytes, then apply
  // the lowest-ranked merge (leftmost on ties) until none applies.
  absl::Status EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const;

  // Raw bytes of vocab token `id`; nullptr when the vocab has no such id.
  const std::string* TokenBytes(int32_t id) const;
  // The id of the vocab token whose raw bytes are `bytes`.
  std::optional<int32_t> TokenId(absl::string_view bytes) const;
  // One past the largest vocab id.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_bytes_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int32_t left, int32_t right) const;

  absl::flat_hash_map<std::string, int32_t> bytes_to_id_;
  std::vector<std::string> id_to_bytes_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t byte_ids_[256];
  std::optional<int32_t> unk_id_;
  bool ignore_merges_ = false;
};

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_BPE_MODEL_H_
