#include "worker/kv/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace epinfer {

int64_t KvCache::BlocksForBudget(int64_t budget_bytes, int64_t num_layers, int64_t dim,
                                 int64_t block_size_tokens) {
  const int64_t block_bytes = num_layers * dim * block_size_tokens * static_cast<int64_t>(sizeof(float));
  return block_bytes > 0 ? budget_bytes / block_bytes : 0;
}

absl::StatusOr<KvCache> KvCache::Create(const Options& options) {
  if (options.num_layers <= 0 || options.dim <= 0 || options.block_size_tokens <= 0 ||
      options.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv cache: layers ", options.num_layers, ", dim ", options.dim, ", block size ",
        options.block_size_tokens, ", blocks ", options.num_blocks, " must all be positive"));
  }
  if (options.num_blocks > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache: ", options.num_blocks, " blocks"));
  }
  return KvCache(options);
}

KvCache::KvCache(const Options& options)
    : options_(options),
      data_(static_cast<size_t>(options.num_layers * options.num_blocks *
                                options.block_size_tokens * options.dim)) {
  free_.reserve(static_cast<size_t>(options.num_blocks));
  // Pop from the back: the lowest block ids are handed out first.
  for (int64_t b = options.num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::Status KvCache::Reserve(KvBlockTable& table, int64_t total_tokens) {
  const int64_t needed = BlocksFor(total_tokens) - static_cast<int64_t>(table.blocks.size());
  if (needed <= 0) return absl::OkStatus();
  if (needed > free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("kv cache: ", needed, " blocks needed, ",
                                                     free_blocks(), " free"));
  }
  for (int64_t i = 0; i < needed; ++i) {
    table.blocks.push_back(free_.back());
    free_.pop_back();
  }
  return absl::OkStatus();
}

void KvCache::Release(KvBlockTable& table) {
  for (auto it = table.blocks.rbegin(); it != table.blocks.rend(); ++it) free_.push_back(*it);
  table.blocks.clear();
  table.num_tokens = 0;
}

}  // namespace epinfer
