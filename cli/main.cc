// `epinfer`: one command for every component and tool. Each subcommand is a thin call into the
// library that the standalone binaries and servers use.
#include <cstring>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "worker/comm/ucx.h"

int main(int argc, char** argv) {
  epinfer::PrepareUcxEnvironment();  // before any thread starts
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0) {
    std::cerr << epinfer::CommandsUsage();
    return argc < 2 ? 2 : 0;
  }
  const epinfer::Command* command = epinfer::FindCommand(argv[1]);
  if (command == nullptr) {
    std::cerr << "epinfer: unknown command '" << argv[1] << "'\n\n" << epinfer::CommandsUsage();
    return 2;
  }
  // The subcommand sees itself as argv[0], so its usage line names it.
  return command->run(argc - 1, argv + 1);
}
