// One rank of the communicator conformance suite, for backends whose ranks are processes:
//   comm_conformance --backend=ucx|nccl --rank=R --size=N --rendezvous=DIR [--steps=S]
// Exit 0: passed; 3: a collective failed (printed); 2: bad flags.
#include <csignal>
#include <iostream>

#include "absl/flags/flag.h"
#include "common/flags.h"
#include "worker/comm/conformance.h"
#include "worker/comm/rendezvous.h"
#include "worker/comm/transport.h"
#include "worker/comm/ucx.h"

ABSL_FLAG(std::string, backend, "ucx", "ucx, or nccl in builds with CUDA");
ABSL_FLAG(int, rank, 0, "this rank");
ABSL_FLAG(int, size, 2, "group size");
ABSL_FLAG(std::string, rendezvous, "", "rendezvous directory");
ABSL_FLAG(int, steps, 20, "steps of the suite");
ABSL_FLAG(int, die_at_step, -1, "SIGKILL this process at the start of this step");
ABSL_FLAG(int, timeout_s, 60, "deadline of each collective");
ABSL_FLAG(int, lanes, 1, "ucx: UCP workers per rank, each driven by its own thread");

int main(int argc, char** argv) {
  epinfer::PrepareUcxEnvironment();
  epinfer::ParseFlagsOrExit(argc, argv, "--rank R --size N --rendezvous DIR");
  auto rendezvous = epinfer::MakeFileRendezvous(absl::GetFlag(FLAGS_rendezvous), "conformance");
  if (absl::Status status = epinfer::CheckProcessTransport(absl::GetFlag(FLAGS_backend));
      !status.ok()) {
    std::cerr << status << "\n";
    return 2;
  }
  auto comm = epinfer::MakeProcessCommunicator(absl::GetFlag(FLAGS_backend),
                                               absl::GetFlag(FLAGS_rank), absl::GetFlag(FLAGS_size),
                                               *rendezvous, absl::Now() + absl::Seconds(60),
                                               absl::GetFlag(FLAGS_lanes));
  if (!comm.ok()) {
    std::cerr << "rank " << absl::GetFlag(FLAGS_rank) << ": " << comm.status() << "\n";
    return 3;
  }
  epinfer::ConformanceOptions options;
  options.steps = absl::GetFlag(FLAGS_steps);
  options.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  const int die_at = absl::GetFlag(FLAGS_die_at_step);
  options.on_step = [die_at](int step) {
    std::cout << "step " << step << std::endl;
    if (step == die_at) std::raise(SIGKILL);
  };
  absl::Status status = epinfer::RunConformance(**comm, options);
  if (!status.ok()) {
    std::cout << "rank " << absl::GetFlag(FLAGS_rank) << " failed: " << status << std::endl;
    return 3;
  }
  std::cout << "rank " << absl::GetFlag(FLAGS_rank) << " passed" << std::endl;
  return 0;
}
