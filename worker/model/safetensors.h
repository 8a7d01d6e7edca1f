#ifndef EPINFER_WORKER_MODEL_SAFETENSORS_H_
#define EPINFER_WORKER_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "worker/kernels/dtype.h"

namespace epinfer {

// One tensor's entry in a safetensors header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section (after the header)
  uint64_t end = 0;
  int64_t num_elements() const;
};

// Parses and validates a safetensors file's header against the file's size: header length within
// the file, JSON object, known dtypes, non-negative shapes, offsets inside the data section,
// byte sizes matching dtype × shape, no two tensors overlapping. Errors name the tensor.
// `file` is the whole file (or at least its first 8 + header bytes, with `file_size` the full
// size). Never reads outside `file`.
absl::StatusOr<std::vector<TensorInfo>> ParseSafetensorsHeader(absl::string_view file,
                                                               uint64_t file_size);

// A memory-mapped safetensors file. Tensor bytes are paged in only when read, so a rank that
// reads a subset of the tensors touches only those bytes.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* Find(const std::string& name) const;
  // The tensor's bytes inside the mapping.
  const uint8_t* Data(const TensorInfo& info) const { return data_ + info.begin; }

 private:
  struct PrivateTag {};

 public:
  explicit SafetensorsFile(PrivateTag) {}

 private:
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
};

// A checkpoint directory: model.safetensors.index.json (sharded) or the *.safetensors files in
// it. Lookups name the file and tensor in every error.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  struct Tensor {
    const TensorInfo* info = nullptr;
    const uint8_t* data = nullptr;
    const std::string* file = nullptr;
  };

  bool Has(const std::string& name) const { return where_.count(name) > 0; }
  // The tensor, checked to have `shape` (empty: any) and one of `dtypes` (empty: any).
  absl::StatusOr<Tensor> Get(const std::string& name, const std::vector<int64_t>& shape = {},
                             const std::vector<DType>& dtypes = {}) const;
  // Every tensor name, sorted.
  std::vector<std::string> Names() const;
  // Names passed to Get so far (tests check that a rank reads only its experts).
  std::set<std::string> Accessed() const;
  const std::string& dir() const { return dir_; }

 private:
  struct PrivateTag {};

 public:
  explicit Checkpoint(PrivateTag) {}

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>> where_;
  mutable absl::Mutex mu_;
  mutable std::set<std::string> accessed_ ABSL_GUARDED_BY(mu_);
};

// Writes a safetensors file (tensors in the given order, header padded to 8 bytes so that data
// is aligned). Used by `epinfer make-model` and tests.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_SAFETENSORS_H_
