#ifndef EPINFER_CLI_COMMANDS_H_
#define EPINFER_CLI_COMMANDS_H_

#include <string>

namespace epinfer {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

// nullptr when there is no such command.
const Command* FindCommand(const std::string& name);

// "usage: epinfer <command> [flags]" and one line per command.
std::string CommandsUsage();

}  // namespace epinfer

#endif  // EPINFER_CLI_COMMANDS_H_
