#include "common/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace epinfer {
namespace {

bool IsBoolFlag(const absl::CommandLineFlag& flag) { return flag.IsOfType<bool>(); }

// Flags that absl itself defines (flagfile, undefok, ...) are not epinfer's interface.
bool IsOwnFlag(const absl::CommandLineFlag& flag) {
  return !absl::StrContains(flag.Filename(), "absl/");
}

bool IsAllowed(const absl::CommandLineFlag& flag, const std::vector<std::string>& allowed) {
  if (!IsOwnFlag(flag)) return false;
  return allowed.empty() ||
         std::find(allowed.begin(), allowed.end(), flag.Name()) != allowed.end();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseFlags(const std::vector<std::string>& args,
                                                   const std::vector<std::string>& allowed) {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-' || arg == "-") {
      positional.emplace_back(arg);
      continue;
    }
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    absl::string_view name = arg;
    absl::string_view value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    std::string underscored(name);
    std::replace(underscored.begin(), underscored.end(), '-', '_');
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(underscored);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(underscored, "no")) {
      // --noflag, --no_flag, --no-flag
      absl::string_view rest = absl::string_view(underscored).substr(2);
      absl::ConsumePrefix(&rest, "_");
      flag = absl::FindCommandLineFlag(rest);
      negated = flag != nullptr && IsBoolFlag(*flag);
      if (!negated) flag = nullptr;
    }
    if (flag == nullptr || !IsAllowed(*flag, allowed)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    std::string text;
    if (negated) {
      if (has_value) {
        return absl::InvalidArgumentError(absl::StrCat("--no", flag->Name(), " takes no value"));
      }
      text = "false";
    } else if (has_value) {
      text = std::string(value);
    } else if (IsBoolFlag(*flag)) {
      text = "true";
    } else if (i + 1 < args.size()) {
      text = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(text, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for --", flag->Name(), "=", text, ": ", error));
    }
  }
  return positional;
}

std::string FlagsUsage(absl::string_view program, absl::string_view usage,
                       const std::vector<std::string>& allowed) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsAllowed(*flag, allowed)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::string out = absl::StrCat("usage: ", program, " ", usage, "\n\nflags:\n");
  for (const auto* flag : flags) {
    absl::StrAppend(&out, "  --", flag->Name(), "  ", flag->Help(), " (default: ",
                    flag->DefaultValue(), ")\n");
  }
  return out;
}

void ExitWithUsageError(absl::string_view program, absl::string_view usage,
                        absl::string_view message, const std::vector<std::string>& allowed) {
  std::cerr << program << ": " << message << "\n\n" << FlagsUsage(program, usage, allowed);
  std::exit(2);
}

std::vector<std::string> ParseFlagsOrExit(int argc, char** argv, absl::string_view usage,
                                          const std::vector<std::string>& allowed) {
  std::string program = argc > 0 ? argv[0] : "epinfer";
  if (size_t slash = program.rfind('/'); slash != std::string::npos) {
    program = program.substr(slash + 1);
  }
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  for (const std::string& arg : args) {
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull") {
      std::cout << FlagsUsage(program, usage, allowed);
      std::exit(0);
    }
  }
  absl::StatusOr<std::vector<std::string>> positional = ParseFlags(args, allowed);
  if (!positional.ok()) {
    ExitWithUsageError(program, usage, positional.status().message(), allowed);
  }
  return *std::move(positional);
}

}  // namespace epinfer
