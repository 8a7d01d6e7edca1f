#ifndef EPINFER_TOKENIZER_UTF8_H_
#define EPINFER_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace epinfer {

// Byte offset of the first byte that does not start or continue a well-formed UTF-8 sequence
// (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or nullopt when all of
// `text` is valid.
std::optional<size_t> FindInvalidUtf8(absl::string_view text);

// INVALID_ARGUMENT "<what>: invalid UTF-8 at byte offset N" when `text` is not valid UTF-8.
absl::Status ValidateUtf8(absl::string_view text, absl::string_view what);

// Decodes the code point that starts at text[pos]; `text` must be valid UTF-8 there. Returns its
// length in bytes (1..4).
int DecodeUtf8At(absl::string_view text, size_t pos, char32_t* code_point);

void AppendUtf8(char32_t code_point, std::string* out);

// Unicode White_Space (the class that Hugging Face tokenizers' `\s` means).
bool IsUnicodeWhiteSpace(char32_t code_point);

// The UTF-8 decoder of the WHATWG Encoding Standard (TextDecoder with fatal=false), as a
// stream: bytes go in, whole characters come out, and each maximal invalid subpart becomes one
// U+FFFD. A character split across Push calls is held until it completes, so the output never
// ends inside a character.
class Utf8StreamDecoder {
 public:
  // Appends the characters that `bytes` completes to `out`.
  void Push(absl::string_view bytes, std::string* out);
  // Ends the stream: an unfinished sequence becomes U+FFFD.
  void Flush(std::string* out);
  bool has_pending() const { return bytes_needed_ != 0; }

 private:
  void PushByte(uint8_t byte, std::string* out);

  char32_t code_point_ = 0;
  int bytes_needed_ = 0;
  int bytes_seen_ = 0;
  uint8_t lower_boundary_ = 0x80;
  uint8_t upper_boundary_ = 0xBF;
};

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_UTF8_H_
