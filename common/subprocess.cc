#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace epinfer {

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                              const Options& options) {
  if (argv.empty()) return absl::InvalidArgumentError("subprocess: empty argv");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!options.output_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, options.output_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  // The child starts with default signal handling and an empty mask, whatever the parent
  // blocks (ShutdownSignal blocks SIGINT/SIGTERM in the parent).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  auto process = std::make_unique<Subprocess>(PrivateTag{});
  const int error = posix_spawn(&process->pid_, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (error != 0) {
    return absl::UnavailableError(absl::StrCat("cannot start ", argv[0], ": ", std::strerror(error)));
  }
  return process;
}

std::optional<int> Subprocess::Poll() {
  if (status_ || pid_ <= 0) return status_;
  int raw = 0;
  const pid_t done = waitpid(pid_, &raw, WNOHANG);
  if (done == pid_) {
    status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  } else if (done < 0 && errno == ECHILD) {
    status_ = 255;  // reaped elsewhere
  }
  return status_;
}

absl::StatusOr<int> Subprocess::Wait(absl::Time deadline) {
  while (true) {
    if (std::optional<int> status = Poll()) return *status;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("process ", pid_, " still running"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Subprocess::Signal(int signal) {
  if (!Poll()) kill(pid_, signal);
}

int Subprocess::Stop(absl::Duration grace) {
  Signal(SIGTERM);
  absl::StatusOr<int> status = Wait(absl::Now() + grace);
  if (status.ok()) return *status;
  Signal(SIGKILL);
  status = Wait(absl::Now() + absl::Seconds(10));
  return status.ok() ? *status : 128 + SIGKILL;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !Poll()) {
    kill(pid_, SIGKILL);
    Wait(absl::Now() + absl::Seconds(10)).IgnoreError();
  }
}

std::string Subprocess::SelfPath() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string();
}

}  // namespace epinfer
