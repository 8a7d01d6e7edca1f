// libFuzzer entry point for the safetensors header parser: any bytes as a whole file. Built with
// `bazel build --config=fuzz //worker/model:safetensors_fuzzer` (clang, -fsanitize=fuzzer).
#include <cstddef>
#include <cstdint>

#include "worker/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view file(reinterpret_cast<const char*>(data), size);
  auto tensors = epinfer::ParseSafetensorsHeader(file, size);
  if (!tensors.ok()) return 0;
  // Every accepted tensor must lie inside the file: read its first and last byte (ASan reports
  // an out-of-bounds read if the parser let one through).
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | data[i];
  volatile uint8_t sink = 0;
  for (const epinfer::TensorInfo& t : *tensors) {
    if (t.end > t.begin) sink ^= data[8 + header + t.begin] ^ data[8 + header + t.end - 1];
  }
  (void)sink;
  return 0;
}
