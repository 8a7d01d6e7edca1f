#ifndef EPINFER_COMMON_FLAGS_H_
#define EPINFER_COMMON_FLAGS_H_

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace epinfer {

// Parses --name=value / --name value / --bool / --nobool against the absl flags linked into the
// program. Returns the positional arguments (argv[0] excluded), or INVALID_ARGUMENT naming the
// unknown flag or the malformed value. `--` ends flag parsing.
// `allowed` (names without dashes) limits the flags a command accepts; empty accepts all of the
// program's own flags. Dashes in flag names read as underscores (--max-tokens = --max_tokens).
absl::StatusOr<std::vector<std::string>> ParseFlags(const std::vector<std::string>& args,
                                                   const std::vector<std::string>& allowed = {});

// The program's usage message followed by its flags (those defined outside absl), with help
// text and defaults.
std::string FlagsUsage(absl::string_view program, absl::string_view usage,
                       const std::vector<std::string>& allowed = {});

// For main(): parses argv; on --help prints the usage and exits 0; on a bad flag prints the
// error and the usage to stderr and exits 2 (the convention for command-line misuse).
std::vector<std::string> ParseFlagsOrExit(int argc, char** argv, absl::string_view usage,
                                          const std::vector<std::string>& allowed = {});

// For main(): prints `message` and the usage to stderr and exits 2.
[[noreturn]] void ExitWithUsageError(absl::string_view program, absl::string_view usage,
                                     absl::string_view message,
                                     const std::vector<std::string>& allowed = {});

}  // namespace epinfer

#endif  // EPINFER_COMMON_FLAGS_H_
