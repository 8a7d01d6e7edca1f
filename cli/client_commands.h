#ifndef EPINFER_CLI_CLIENT_COMMANDS_H_
#define EPINFER_CLI_CLIENT_COMMANDS_H_

namespace epinfer {

// epinfer complete: the gRPC client of epinfer.v1.Completions (streams the answer).
int RunComplete(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_CLI_CLIENT_COMMANDS_H_
