#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace epinfer {
namespace {

struct Tables {
  std::array<char32_t, 256> byte_to_unicode;
  std::array<int16_t, 324> unicode_to_byte;  // the alphabet ends at U+0143
};

// GPT-2 encoder.py bytes_to_unicode(): printable Latin-1 bytes map to themselves, the others to
// U+0100 onwards in byte order.
Tables BuildTables() {
  Tables t;
  t.unicode_to_byte.fill(-1);
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
    t.byte_to_unicode[b] = cp;
    t.unicode_to_byte[cp] = static_cast<int16_t>(b);
  }
  return t;
}

const Tables& GetTables() {
  static const Tables tables = BuildTables();
  return tables;
}

}  // namespace

char32_t ByteToUnicode(uint8_t byte) { return GetTables().byte_to_unicode[byte]; }

int UnicodeToByte(char32_t code_point) {
  const Tables& t = GetTables();
  return code_point < t.unicode_to_byte.size() ? t.unicode_to_byte[code_point] : -1;
}

bool ByteLevelToBytes(absl::string_view token, std::string* bytes) {
  bytes->clear();
  for (size_t i = 0; i < token.size();) {
    char32_t cp;
    i += DecodeUtf8At(token, i, &cp);
    const int b = UnicodeToByte(cp);
    if (b < 0) return false;
    bytes->push_back(static_cast<char>(b));
  }
  return true;
}

std::string BytesToByteLevel(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) AppendUtf8(ByteToUnicode(static_cast<uint8_t>(c)), &out);
  return out;
}

}  // namespace epinfer
