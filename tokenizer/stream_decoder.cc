#include "tokenizer/stream_decoder.h"

namespace epinfer {

absl::StatusOr<std::string> StreamDecoder::Push(int32_t id) {
  std::string text;
  absl::Status status = tokenizer_.AppendTokenText(id, skip_special_tokens_, &utf8_, &text);
  if (!status.ok()) return status;
  return text;
}

std::string StreamDecoder::Finish() {
  std::string text;
  utf8_.Flush(&text);
  return text;
}

}  // namespace epinfer
