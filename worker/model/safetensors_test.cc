#include "worker/model/safetensors.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace epinfer {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(base ? base : "/tmp") / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// A file of the safetensors layout with `header` as its JSON and `data_bytes` zero bytes after.
std::string RawFile(const std::string& header, size_t data_bytes, uint64_t claimed_length = 0) {
  std::string out(8, '\0');
  const uint64_t n = claimed_length ? claimed_length : header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

absl::Status Parse(const std::string& file) {
  return ParseSafetensorsHeader(file, file.size()).status();
}

void ExpectError(const std::string& file, const std::string& mentions) {
  absl::Status status = Parse(file);
  ASSERT_FALSE(status.ok()) << mentions;
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(status.message()).find(mentions), std::string::npos) << status;
}

TEST(SafetensorsHeaderTest, AcceptsAValidHeader) {
  const std::string file =
      RawFile(R"({"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},)"
              R"("__metadata__":{"format":"pt"},)"
              R"("b":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[12,16]}})",
              16);
  auto tensors = ParseSafetensorsHeader(file, file.size());
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_EQ(tensors->size(), 2u);
}

TEST(SafetensorsHeaderTest, MalformedFilesNameTheProblem) {
  ExpectError("abc", "shorter than the 8-byte");
  ExpectError(RawFile("{}", 0, 1000), "runs past the end");
  ExpectError(RawFile("{}", 0, uint64_t{1} << 62), "exceeds 100 MB");
  ExpectError(RawFile("{\"a\":", 0), "not valid JSON");
  ExpectError(RawFile("[1]", 0), "not a JSON object");
  ExpectError(RawFile(R"({"w":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}})", 1),
              "tensor w: unknown dtype F4");
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
              "outside the 4-byte data section");
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
              "tensor w: 8 bytes for F32 [3]");
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0),
              "not a list of sizes");
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
              "data_offsets [8, 0]");
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8),
              "data_offsets must be");
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],)"
                      R"("data_offsets":[0,0]}})",
                      0),
              "too large");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      12),
              "overlap");
  ExpectError(RawFile(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8), "dtype missing");
}

TEST(CheckpointTest, WritesAndReadsShardedCheckpointsAndNamesFileAndTensorInErrors) {
  const std::string dir = TempDir("sharded");
  std::string bytes_a(4 * 6, '\x01'), bytes_b(2 * 2, '\x02');
  ASSERT_TRUE(WriteSafetensors(dir + "/one.safetensors", {{"a", DType::kF32, {2, 3}, bytes_a}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/two.safetensors", {{"b", DType::kBF16, {2}, bytes_b}}).ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata":{},"weight_map":{"a":"one.safetensors","b":"two.safetensors"}})";
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto a = (*checkpoint)->Get("a", {2, 3}, {DType::kF32});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->data[0], 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data) % 8, 0u);  // header padded: data aligned

  auto missing = (*checkpoint)->Get("c");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(missing.status().message()).find("tensor c is missing"), std::string::npos);
  auto shape = (*checkpoint)->Get("a", {3, 2});
  EXPECT_NE(std::string(shape.status().message()).find("one.safetensors: tensor a: shape [2,3], "
                                                       "expected [3,2]"),
            std::string::npos)
      << shape.status();
  auto dtype = (*checkpoint)->Get("b", {}, {DType::kF32});
  EXPECT_NE(std::string(dtype.status().message()).find("dtype BF16, expected F32"),
            std::string::npos);
  EXPECT_EQ((*checkpoint)->Accessed(), (std::set<std::string>{"a"}));
}

TEST(CheckpointTest, IndexNamingATensorItsFileLacksIsAnError) {
  const std::string dir = TempDir("bad_index");
  ASSERT_TRUE(WriteSafetensors(dir + "/one.safetensors", {{"a", DType::kU8, {1}, "x"}}).ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"weight_map":{"a":"one.safetensors","ghost":"one.safetensors"}})";
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_NE(std::string(checkpoint.status().message()).find("ghost"), std::string::npos);
}

TEST(CheckpointTest, TruncatedFileIsAnErrorNamingTheFile) {
  const std::string dir = TempDir("truncated");
  ASSERT_TRUE(WriteSafetensors(dir + "/m.safetensors", {{"a", DType::kF32, {64}, std::string(256, 'x')}}).ok());
  fs::resize_file(dir + "/m.safetensors", fs::file_size(dir + "/m.safetensors") - 10);
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_NE(std::string(checkpoint.status().message()).find("m.safetensors"), std::string::npos);
  EXPECT_NE(std::string(checkpoint.status().message()).find("tensor a"), std::string::npos);
}

TEST(CheckpointTest, DirectoryWithoutSafetensorsIsNotFound) {
  EXPECT_EQ(Checkpoint::Open(TempDir("empty")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Checkpoint::Open("/nonexistent/dir").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace epinfer
