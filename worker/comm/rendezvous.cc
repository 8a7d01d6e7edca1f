#include "worker/comm/rendezvous.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"

namespace epinfer {
namespace {

class FileRendezvous : public Rendezvous {
 public:
  FileRendezvous(std::string dir, std::string key) : dir_(std::move(dir)), key_(std::move(key)) {}

  absl::StatusOr<std::vector<std::string>> Exchange(int rank, int size, const std::string& mine,
                                                    absl::Time deadline) override {
    namespace fs = std::filesystem;
    if (rank < 0 || rank >= size) {
      return absl::InvalidArgumentError(absl::StrCat("rendezvous: rank ", rank, " of ", size));
    }
    std::error_code ec;
    fs::create_directories(dir_, ec);
    const fs::path final_path = Path(rank);
    const fs::path temp = final_path.string() + ".tmp";
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      out.write(mine.data(), static_cast<std::streamsize>(mine.size()));
      if (!out) return absl::PermissionDeniedError(absl::StrCat("rendezvous: cannot write ", temp.string()));
    }
    fs::rename(temp, final_path, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("rendezvous: ", ec.message()));
    std::vector<std::string> blobs(static_cast<size_t>(size));
    std::vector<bool> have(static_cast<size_t>(size), false);
    int missing = size;
    while (true) {
      for (int r = 0; r < size; ++r) {
        if (have[r]) continue;
        std::ifstream in(Path(r), std::ios::binary);
        if (!in) continue;
        blobs[r].assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        have[r] = true;
        --missing;
      }
      if (missing == 0) return blobs;
      if (absl::Now() >= deadline) {
        std::string absent;
        for (int r = 0; r < size; ++r) {
          if (!have[r]) absl::StrAppend(&absent, absent.empty() ? "" : ",", r);
        }
        return absl::DeadlineExceededError(absl::StrCat("rendezvous in ", dir_, ": ranks ", absent,
                                                        " did not publish before the deadline"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  std::filesystem::path Path(int rank) const {
    return std::filesystem::path(dir_) / absl::StrCat(key_, ".", rank);
  }

  std::string dir_, key_;
};

}  // namespace

std::unique_ptr<Rendezvous> MakeFileRendezvous(std::string dir, std::string key) {
  return std::make_unique<FileRendezvous>(std::move(dir), std::move(key));
}

}  // namespace epinfer
