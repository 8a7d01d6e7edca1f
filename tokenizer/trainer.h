#ifndef EPINFER_TOKENIZER_TRAINER_H_
#define EPINFER_TOKENIZER_TRAINER_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epinfer {

// tokenizer.json and tokenizer_config.json of a trained tokenizer.
struct TrainedTokenizer {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
  int num_tokens = 0;  // ids in use: 0 .. num_tokens-1 (at most the vocab_size asked for)
};

// Trains a byte-level BPE tokenizer shaped like DeepSeek-V3's: its pre-tokenizer (digits, CJK
// runs, the V3 split regex), ids 0-2 for <｜begin▁of▁sentence｜>, <｜end▁of▁sentence｜> and
// <｜▁pad▁｜>, the 256 bytes, then merges (most frequent pair first, pairs seen at least twice),
// then DeepSeek's added tokens (<think>, </think>, FIM, <｜User｜>, <｜Assistant｜>, <|EOT|>, tool
// tokens), and the DeepSeek-V3 chat template. `vocab_size` bounds the total number of ids; it
// must leave room for the bytes and the added tokens (>= 276). Deterministic.
absl::StatusOr<TrainedTokenizer> TrainByteLevelBpe(absl::string_view corpus_text, int vocab_size);

// TrainByteLevelBpe, then writes tokenizer.json and tokenizer_config.json into `out_dir`
// (created if missing). This is what `epinfer make-model --tokenizer-corpus FILE` calls.
absl::Status TrainTokenizer(const std::string& corpus_text, int vocab_size,
                            const std::string& out_dir);

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_TRAINER_H_
