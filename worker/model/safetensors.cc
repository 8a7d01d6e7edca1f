#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace epinfer {
namespace {

using Json = nlohmann::json;

// The safetensors reference implementation refuses headers over 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

absl::Status HeaderError(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors header: ", what));
}

}  // namespace

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::StatusOr<std::vector<TensorInfo>> ParseSafetensorsHeader(absl::string_view file,
                                                               uint64_t file_size) {
  if (file.size() < 8 || file_size < 8) {
    return HeaderError(absl::StrCat("file of ", file_size, " bytes is shorter than the 8-byte "
                                    "header length"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<uint8_t>(file[i]);
  if (header_size > kMaxHeaderBytes) {
    return HeaderError(absl::StrCat("header length ", header_size, " exceeds 100 MB"));
  }
  if (header_size > file_size - 8 || header_size > file.size() - 8) {
    return HeaderError(absl::StrCat("header length ", header_size, " runs past the end of the ",
                                    file_size, "-byte file"));
  }
  const uint64_t data_size = file_size - 8 - header_size;
  Json header = Json::parse(file.substr(8, header_size), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return HeaderError("not valid JSON");
  if (!header.is_object()) return HeaderError("not a JSON object");

  std::vector<TensorInfo> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return HeaderError("__metadata__ is not an object");
      continue;
    }
    const std::string where = absl::StrCat("tensor ", name, ": ");
    if (!entry.is_object()) return HeaderError(where + "entry is not an object");
    TensorInfo info;
    info.name = name;
    auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string()) return HeaderError(where + "dtype missing");
    if (!ParseDType(dtype->get<std::string>(), &info.dtype)) {
      return HeaderError(where + "unknown dtype " + dtype->get<std::string>());
    }
    auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array()) return HeaderError(where + "shape missing");
    if (shape->size() > 8) return HeaderError(where + "more than 8 dimensions");
    // Element count with overflow checks: every dimension and the product stay below 2^62.
    uint64_t elements = 1;
    for (const Json& d : *shape) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
        return HeaderError(where + "shape " + shape->dump() + " is not a list of sizes");
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 62) || (dim != 0 && elements > (uint64_t{1} << 62) / dim)) {
        return HeaderError(where + "shape " + shape->dump() + " is too large");
      }
      elements *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    auto offsets = entry.find("data_offsets");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      return HeaderError(where + "data_offsets must be [begin, end]");
    }
    info.begin = (*offsets)[0].get<uint64_t>();
    info.end = (*offsets)[1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size) {
      return HeaderError(absl::StrCat(where, "data_offsets [", info.begin, ", ", info.end,
                                      "] outside the ", data_size, "-byte data section"));
    }
    const uint64_t expected = elements * static_cast<uint64_t>(DTypeSize(info.dtype));
    if (info.end - info.begin != expected) {
      return HeaderError(absl::StrCat(where, info.end - info.begin, " bytes for ",
                                      DTypeName(info.dtype), " ", ShapeString(info.shape),
                                      " (expected ", expected, ")"));
    }
    tensors.push_back(std::move(info));
  }
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return HeaderError(absl::StrCat("tensors ", by_offset[i - 1]->name, " and ",
                                      by_offset[i]->name, " overlap"));
    }
  }
  return tensors;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto file = std::make_unique<SafetensorsFile>(PrivateTag{});
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap: ", std::strerror(errno)));
    }
    file->mapping_ = mapping;
    file->mapping_size_ = size;
  }
  ::close(fd);
  absl::string_view bytes(static_cast<const char*>(file->mapping_), file->mapping_size_);
  absl::StatusOr<std::vector<TensorInfo>> tensors = ParseSafetensorsHeader(bytes, size);
  if (!tensors.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", tensors.status().message()));
  }
  file->tensors_ = *std::move(tensors);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<uint8_t>(bytes[i]);
  file->data_ = static_cast<const uint8_t*>(file->mapping_) + 8 + header_size;
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->by_name_[file->tensors_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto checkpoint = std::make_unique<Checkpoint>(PrivateTag{});
  checkpoint->dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  }
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;  // tensor → file name, from the index
  std::vector<std::string> file_names;
  if (fs::exists(index_path, ec)) {
    std::ifstream in(index_path);
    std::stringstream text;
    text << in.rdbuf();
    Json index = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": not JSON with a \"weight_map\" object"));
    }
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path.string(), ": weight_map[", name, "] is not a file name in ", dir));
      }
      weight_map[name] = file.get<std::string>();
      file_names.push_back(file.get<std::string>());
    }
    std::sort(file_names.begin(), file_names.end());
    file_names.erase(std::unique(file_names.begin(), file_names.end()), file_names.end());
  } else {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (absl::EndsWith(entry.path().filename().string(), ".safetensors")) {
        file_names.push_back(entry.path().filename().string());
      }
    }
    std::sort(file_names.begin(), file_names.end());
    if (file_names.empty()) {
      return absl::NotFoundError(absl::StrCat(dir, ": no *.safetensors files"));
    }
  }
  for (const std::string& name : file_names) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                     SafetensorsFile::Open((fs::path(dir) / name).string()));
    for (const TensorInfo& info : file->tensors()) {
      auto mapped = weight_map.find(info.name);
      if (!weight_map.empty() && (mapped == weight_map.end() || mapped->second != name)) {
        continue;  // the index assigns this name to another file (or not at all)
      }
      if (checkpoint->where_.count(info.name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            file->path(), ": tensor ", info.name, " also in ",
            checkpoint->where_[info.name].first->path()));
      }
      checkpoint->where_[info.name] = {file.get(), &info};
    }
    checkpoint->files_.push_back(std::move(file));
  }
  for (const auto& [name, file] : weight_map) {
    if (!checkpoint->where_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": tensor ", name,
                                                     " is not in ", file));
    }
  }
  return checkpoint;
}

absl::StatusOr<Checkpoint::Tensor> Checkpoint::Get(const std::string& name,
                                                   const std::vector<int64_t>& shape,
                                                   const std::vector<DType>& dtypes) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor ", name, " is missing"));
  }
  const auto& [file, info] = it->second;
  if (!shape.empty() && info->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor ", name, ": shape ",
                                                   ShapeString(info->shape), ", expected ",
                                                   ShapeString(shape)));
  }
  if (!dtypes.empty() && std::find(dtypes.begin(), dtypes.end(), info->dtype) == dtypes.end()) {
    std::vector<std::string> names;
    for (DType d : dtypes) names.emplace_back(DTypeName(d));
    return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor ", name, ": dtype ",
                                                   DTypeName(info->dtype), ", expected ",
                                                   absl::StrJoin(names, " or ")));
  }
  {
    absl::MutexLock lock(&mu_);
    accessed_.insert(name);
  }
  return Tensor{info, file->Data(*info), &file->path()};
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, _] : where_) names.push_back(name);
  return names;
}

std::set<std::string> Checkpoint::Accessed() const {
  absl::MutexLock lock(&mu_);
  return accessed_;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    int64_t elements = 1;
    for (int64_t d : t.shape) elements *= d;
    if (static_cast<uint64_t>(elements * DTypeSize(t.dtype)) != t.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("WriteSafetensors: tensor ", t.name, ": ",
                                                     t.bytes.size(), " bytes for ",
                                                     DTypeName(t.dtype), " ", ShapeString(t.shape)));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot create"));
  char length[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.write(length, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const TensorToWrite& t : tensors) {
    out.write(t.bytes.data(), static_cast<std::streamsize>(t.bytes.size()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace epinfer
