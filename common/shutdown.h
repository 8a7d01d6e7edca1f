#ifndef EPINFER_COMMON_SHUTDOWN_H_
#define EPINFER_COMMON_SHUTDOWN_H_

#include <csignal>
#include <optional>

#include "absl/time/time.h"

namespace epinfer {

// SIGINT/SIGTERM as an event the main thread waits for. Construct it first thing in main(),
// before any thread starts: it blocks the signals in this thread, and every thread started
// afterwards inherits the mask, so only Wait() ever sees them.
class ShutdownSignal {
 public:
  ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // The signal number if SIGINT or SIGTERM arrived within `timeout`, nullopt otherwise.
  std::optional<int> Wait(absl::Duration timeout);

 private:
  sigset_t signals_;
};

}  // namespace epinfer

#endif  // EPINFER_COMMON_SHUTDOWN_H_
