#include "cli/commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/bench_command.h"
#include "cli/client_commands.h"
#include "cli/eplb_command.h"
#include "cli/model_commands.h"
#include "cli/serve_command.h"
#include "common/version.h"
#include "router/router_main.h"
#include "scheduler/scheduler_main.h"
#include "tokenizer/tokenizer_cli.h"
#include "worker/worker_main.h"

namespace epinfer {
namespace {

int RunVersion(int, char**) {
  std::cout << "epinfer " << kVersion << "\n";
  return 0;
}

constexpr Command kCommands[] = {
    {"router", "run the router (public API, cluster map)", RunRouter},
    {"worker", "run one EP worker rank", RunWorker},
    {"scheduler", "run the scheduler (telemetry, EPLB, batch budgets)", RunScheduler},
    {"make-model", "write a random-weight DeepSeek-V3 checkpoint (HF layout)", RunMakeModel},
    {"forward", "write the logits of every position of a token list", RunForward},
    {"generate", "generate token ids from a prompt of token ids", RunGenerate},
    {"model-info", "parameter counts and KV bytes per token of a config.json", RunModelInfo},
    {"tokenize", "text on stdin to token ids (JSON array)", RunTokenize},
    {"detokenize", "token ids (JSON array) on stdin to text", RunDetokenize},
    {"serve", "run a local cluster: router, scheduler and N workers", RunServe},
    {"complete", "stream a completion from a router (gRPC client)", RunComplete},
    {"bench", "bench serve: load generator (throughput, TTFT, ITL) against a router", RunBench},
    {"eplb", "balance experts over GPUs (DeepSeek's EPLB) for a load matrix", RunEplb},
    {"version", "print the version", RunVersion},
};

}  // namespace

const Command* FindCommand(const std::string& name) {
  for (const Command& command : kCommands) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

std::string CommandsUsage() {
  std::string out = "usage: epinfer <command> [flags]   (epinfer <command> --help for its flags)\n\n";
  for (const Command& command : kCommands) {
    absl::StrAppend(&out, "  ", command.name, std::string(12 - std::string(command.name).size(), ' '),
                    command.summary, "\n");
  }
  return out;
}

}  // namespace epinfer
