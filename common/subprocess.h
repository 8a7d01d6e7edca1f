#ifndef EPINFER_COMMON_SUBPROCESS_H_
#define EPINFER_COMMON_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace epinfer {

// A child process (posix_spawn). The destructor kills it if it is still running, so no child
// outlives its owner by accident.
class Subprocess {
 public:
  struct Options {
    // Appends stdout and stderr to this file; empty: inherit the parent's.
    std::string output_path;
  };

  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const Options& options);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // The exit status once it has exited (a signal death reads as 128 + signal), nullopt while
  // it runs.
  std::optional<int> Poll();
  // Waits until it exits or the deadline passes (then DEADLINE_EXCEEDED; it keeps running).
  absl::StatusOr<int> Wait(absl::Time deadline);
  void Signal(int signal);
  // SIGTERM, then SIGKILL if it has not exited after `grace`; returns the exit status.
  int Stop(absl::Duration grace);

  // The path of the running executable (/proc/self/exe), for re-executing oneself.
  static std::string SelfPath();

 private:
  struct PrivateTag {};

 public:
  explicit Subprocess(PrivateTag) {}

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace epinfer

#endif  // EPINFER_COMMON_SUBPROCESS_H_
