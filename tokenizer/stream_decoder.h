#ifndef EPINFER_TOKENIZER_STREAM_DECODER_H_
#define EPINFER_TOKENIZER_STREAM_DECODER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace epinfer {

// Incremental detokenization for streaming: feed token ids as the model produces them and get
// back the text they complete. Bytes of a character that spans tokens are held until the
// character is whole, so every piece returned is valid UTF-8, and the pieces joined equal
// Tokenizer::Decode of all the ids.
class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // The text that `id` completes (often empty while a character is unfinished).
  absl::StatusOr<std::string> Push(int32_t id);
  // The end of the stream: an unfinished character becomes U+FFFD.
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  Utf8StreamDecoder utf8_;
};

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_STREAM_DECODER_H_
