#ifndef EPINFER_WORKER_KV_KV_CACHE_H_
#define EPINFER_WORKER_KV_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace epinfer {

// The blocks one sequence owns, in position order: token p lives in blocks[p / block_size] at
// offset p % block_size. Addressable units (sequence, layers, block ids), so a prefill rank can
// hand them to a decode rank later.
struct KvBlockTable {
  std::vector<int32_t> blocks;
  int64_t num_tokens = 0;  // tokens whose KV has been written
};

// Paged latent KV cache for absorbed MLA: per layer and token, kv_lora_rank normalised latent
// values followed by qk_rope_head_dim roped key values (576 for DeepSeek-V3). Stored as f32.
class KvCache {
 public:
  struct Options {
    int64_t num_layers = 0;
    int64_t dim = 0;  // kv_lora_rank + qk_rope_head_dim
    int64_t block_size_tokens = 16;
    int64_t num_blocks = 0;
  };

  // How many blocks fit in `budget_bytes`.
  static int64_t BlocksForBudget(int64_t budget_bytes, int64_t num_layers, int64_t dim,
                                 int64_t block_size_tokens);
  static absl::StatusOr<KvCache> Create(const Options& options);

  // Grows `table` to hold `total_tokens` tokens, all or nothing: RESOURCE_EXHAUSTED (and the
  // table unchanged) when the free blocks do not suffice.
  absl::Status Reserve(KvBlockTable& table, int64_t total_tokens);
  // Returns all of the table's blocks to the free list and empties it.
  void Release(KvBlockTable& table);

  // The dim values of `position` in `layer` (its block must be reserved).
  float* At(const KvBlockTable& table, int64_t layer, int64_t position) {
    const int64_t block = table.blocks[position / options_.block_size_tokens];
    return data_.data() +
           ((layer * options_.num_blocks + block) * options_.block_size_tokens +
            position % options_.block_size_tokens) * options_.dim;
  }

  int64_t block_size_tokens() const { return options_.block_size_tokens; }
  int64_t num_blocks() const { return options_.num_blocks; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t dim() const { return options_.dim; }
  int64_t bytes_per_token() const { return options_.num_layers * options_.dim * sizeof(float); }
  int64_t BlocksFor(int64_t tokens) const {
    return (tokens + options_.block_size_tokens - 1) / options_.block_size_tokens;
  }

 private:
  explicit KvCache(const Options& options);

  Options options_;
  std::vector<float> data_;  // [num_layers][num_blocks][block_size_tokens][dim]
  std::vector<int32_t> free_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_KV_KV_CACHE_H_
