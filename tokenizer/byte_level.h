#ifndef EPINFER_TOKENIZER_BYTE_LEVEL_H_
#define EPINFER_TOKENIZER_BYTE_LEVEL_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace epinfer {

// GPT-2's bytes_to_unicode: every byte as a printable code point ("Ġ" for ' ', "Ċ" for '\n'),
// the alphabet in which byte-level BPE vocabularies and merges are written.
char32_t ByteToUnicode(uint8_t byte);

// The byte that `code_point` stands for, or -1 when it is not in the byte-level alphabet.
int UnicodeToByte(char32_t code_point);

// "Ġhello" -> " hello". False when `token` (valid UTF-8) has a character outside the alphabet.
bool ByteLevelToBytes(absl::string_view token, std::string* bytes);

// " hello" -> "Ġhello".
std::string BytesToByteLevel(absl::string_view bytes);

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_BYTE_LEVEL_H_
