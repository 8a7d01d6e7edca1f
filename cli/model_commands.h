#ifndef EPINFER_CLI_MODEL_COMMANDS_H_
#define EPINFER_CLI_MODEL_COMMANDS_H_

namespace epinfer {

// epinfer make-model: random-weight checkpoints in the HF DeepSeek-V3 layout.
int RunMakeModel(int argc, char** argv);
// epinfer forward: logits of every position, raw little-endian f32 [num_tokens, vocab].
int RunForward(int argc, char** argv);
// epinfer generate: token ids of a completion, comma-separated on the last line.
int RunGenerate(int argc, char** argv);
// epinfer model-info: a config.json's architecture, parameter counts and KV bytes per token.
int RunModelInfo(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_CLI_MODEL_COMMANDS_H_
