#ifndef EPINFER_CLI_BENCH_COMMAND_H_
#define EPINFER_CLI_BENCH_COMMAND_H_

namespace epinfer {

// epinfer bench serve: a load generator against a router (or one worker with --direct).
int RunBench(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_CLI_BENCH_COMMAND_H_
