#ifndef EPINFER_CLI_SERVE_COMMAND_H_
#define EPINFER_CLI_SERVE_COMMAND_H_

namespace epinfer {

// epinfer serve: a whole cluster on this machine — router, scheduler and N workers over UCX on
// 127.0.0.1 — supervised until Ctrl-C / SIGTERM.
int RunServe(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_CLI_SERVE_COMMAND_H_
