#include "tokenizer/utf8.h"

#include "absl/strings/str_cat.h"

namespace epinfer {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

}  // namespace

std::optional<size_t> FindInvalidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      __builtin_memcpy(&word, s + i, 8);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const uint8_t b = s[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    int length;
    uint8_t lower = 0x80, upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      length = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      length = 3;
      if (b == 0xE0) lower = 0xA0;
      if (b == 0xED) upper = 0x9F;  // surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      length = 4;
      if (b == 0xF0) lower = 0x90;
      if (b == 0xF4) upper = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + length > n) return i;
    if (s[i + 1] < lower || s[i + 1] > upper) return i;
    for (int k = 2; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += length;
  }
  return std::nullopt;
}

absl::Status ValidateUtf8(absl::string_view text, absl::string_view what) {
  if (std::optional<size_t> offset = FindInvalidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": invalid UTF-8 at byte offset ", *offset));
  }
  return absl::OkStatus();
}

int DecodeUtf8At(absl::string_view text, size_t pos, char32_t* code_point) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  if (s[0] < 0x80) {
    *code_point = s[0];
    return 1;
  }
  if (s[0] < 0xE0) {
    *code_point = (char32_t{s[0] & 0x1Fu} << 6) | (s[1] & 0x3Fu);
    return 2;
  }
  if (s[0] < 0xF0) {
    *code_point = (char32_t{s[0] & 0x0Fu} << 12) | (char32_t{s[1] & 0x3Fu} << 6) | (s[2] & 0x3Fu);
    return 3;
  }
  *code_point = (char32_t{s[0] & 0x07u} << 18) | (char32_t{s[1] & 0x3Fu} << 12) |
                (char32_t{s[2] & 0x3Fu} << 6) | (s[3] & 0x3Fu);
  return 4;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsUnicodeWhiteSpace(char32_t c) {
  // PropList.txt White_Space.
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

void Utf8StreamDecoder::Push(absl::string_view bytes, std::string* out) {
  for (char c : bytes) PushByte(static_cast<uint8_t>(c), out);
}

// WHATWG Encoding Standard, "UTF-8 decoder", step by step.
void Utf8StreamDecoder::PushByte(uint8_t byte, std::string* out) {
  if (bytes_needed_ == 0) {
    if (byte < 0x80) {
      out->push_back(static_cast<char>(byte));
    } else if (byte >= 0xC2 && byte <= 0xDF) {
      bytes_needed_ = 1;
      code_point_ = byte & 0x1F;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      if (byte == 0xE0) lower_boundary_ = 0xA0;
      if (byte == 0xED) upper_boundary_ = 0x9F;
      bytes_needed_ = 2;
      code_point_ = byte & 0x0F;
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      if (byte == 0xF0) lower_boundary_ = 0x90;
      if (byte == 0xF4) upper_boundary_ = 0x8F;
      bytes_needed_ = 3;
      code_point_ = byte & 0x07;
    } else {
      AppendUtf8(kReplacement, out);
    }
    return;
  }
  if (byte < lower_boundary_ || byte > upper_boundary_) {
    code_point_ = 0;
    bytes_needed_ = bytes_seen_ = 0;
    lower_boundary_ = 0x80;
    upper_boundary_ = 0xBF;
    AppendUtf8(kReplacement, out);
    PushByte(byte, out);  // the byte starts over
    return;
  }
  lower_boundary_ = 0x80;
  upper_boundary_ = 0xBF;
  code_point_ = (code_point_ << 6) | (byte & 0x3F);
  if (++bytes_seen_ != bytes_needed_) return;
  AppendUtf8(code_point_, out);
  code_point_ = 0;
  bytes_needed_ = bytes_seen_ = 0;
}

void Utf8StreamDecoder::Flush(std::string* out) {
  if (bytes_needed_ == 0) return;
  code_point_ = 0;
  bytes_needed_ = bytes_seen_ = 0;
  lower_boundary_ = 0x80;
  upper_boundary_ = 0xBF;
  AppendUtf8(kReplacement, out);
}

}  // namespace epinfer
