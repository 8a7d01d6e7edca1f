#ifndef EPINFER_CLI_EPLB_COMMAND_H_
#define EPINFER_CLI_EPLB_COMMAND_H_

namespace epinfer {

// epinfer eplb --input FILE.json: DeepSeek's EPLB on a load matrix, JSON out.
int RunEplb(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_CLI_EPLB_COMMAND_H_
