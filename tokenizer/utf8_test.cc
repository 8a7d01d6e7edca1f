#include "tokenizer/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

std::string DecodeAll(const std::string& bytes) {
  Utf8StreamDecoder decoder;
  std::string out;
  decoder.Push(bytes, &out);
  decoder.Flush(&out);
  return out;
}

TEST(Utf8Test, FindsTheOffsetOfTheFirstInvalidByte) {
  EXPECT_EQ(FindInvalidUtf8("plain ascii, long enough for the fast path"), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8("你好 👍"), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8("abc\xff"), 3u);
  EXPECT_EQ(FindInvalidUtf8("ab\xe4\xbd"), 2u);          // truncated
  EXPECT_EQ(FindInvalidUtf8("\xc0\xaf"), 0u);            // overlong '/'
  EXPECT_EQ(FindInvalidUtf8("x\xed\xa0\x80"), 1u);       // a UTF-16 surrogate
  EXPECT_EQ(FindInvalidUtf8("\xf4\x90\x80\x80"), 0u);    // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("12345678\x80"), 8u);        // after the ASCII fast path
}

TEST(Utf8Test, ValidateNamesWhatAndWhere) {
  absl::Status status = ValidateUtf8("ok\xfe", "messages[0].content");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "messages[0].content: invalid UTF-8 at byte offset 2");
}

// Expected strings: JavaScript's TextDecoder (WHATWG), which the reference decoder uses.
TEST(Utf8Test, StreamDecoderReplacesEachMaximalInvalidSubpartOnce) {
  EXPECT_EQ(DecodeAll("a\xe2\x82" "b"), "a\xef\xbf\xbd" "b");
  EXPECT_EQ(DecodeAll("\xf0\x9f\x91"), "\xef\xbf\xbd");
  EXPECT_EQ(DecodeAll("\xff\xfe"), "\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(DecodeAll("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(DecodeAll("\xe0\x80"), "\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(Utf8Test, StreamDecoderHoldsACharacterUntilItsLastByte) {
  Utf8StreamDecoder decoder;
  std::string out;
  decoder.Push("\xf0\x9f", &out);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(decoder.has_pending());
  decoder.Push("\x91", &out);
  EXPECT_EQ(out, "");
  decoder.Push("\x8d!", &out);
  EXPECT_EQ(out, "👍!");
  EXPECT_FALSE(decoder.has_pending());
}

TEST(Utf8Test, WhiteSpaceIsTheUnicodeProperty) {
  for (char32_t c : {0x09, 0x0A, 0x0B, 0x0D, 0x20, 0x85, 0xA0, 0x2003, 0x3000}) {
    EXPECT_TRUE(IsUnicodeWhiteSpace(c)) << static_cast<uint32_t>(c);
  }
  for (char32_t c : {0x08, 0x41, 0x200B, 0xFEFF}) EXPECT_FALSE(IsUnicodeWhiteSpace(c)) << static_cast<uint32_t>(c);
}

}  // namespace
}  // namespace epinfer
