#include "common/shutdown.h"

#include <pthread.h>

#include <cerrno>

namespace epinfer {

ShutdownSignal::ShutdownSignal() {
  sigemptyset(&signals_);
  sigaddset(&signals_, SIGINT);
  sigaddset(&signals_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
}

std::optional<int> ShutdownSignal::Wait(absl::Duration timeout) {
  timespec ts = absl::ToTimespec(timeout);
  int signal = sigtimedwait(&signals_, nullptr, &ts);
  if (signal < 0) return std::nullopt;  // EAGAIN (timeout) or EINTR
  return signal;
}

}  // namespace epinfer
