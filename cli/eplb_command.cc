#include "cli/eplb_command.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "common/flags.h"
#include "scheduler/eplb_json.h"

ABSL_FLAG(std::string, input, "",
          "eplb: JSON {\"weight\": [[...] per layer], \"num_replicas\": R, \"num_groups\": G, "
          "\"num_nodes\": N, \"num_gpus\": P}; '-' reads stdin.");

namespace epinfer {

int RunEplb(int argc, char** argv) {
  constexpr char kUsage[] = "--input FILE.json";
  const std::vector<std::string> flags = {"input"};
  std::vector<std::string> args = ParseFlagsOrExit(argc, argv, kUsage, flags);
  if (!args.empty()) ExitWithUsageError("eplb", kUsage, "unexpected argument " + args[0], flags);
  const std::string path = absl::GetFlag(FLAGS_input);
  if (path.empty()) ExitWithUsageError("eplb", kUsage, "--input is required", flags);
  std::stringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) {
      std::cerr << "eplb: cannot read " << path << "\n";
      return 2;
    }
    text << in.rdbuf();
  }
  absl::StatusOr<EplbInput> input = ParseEplbInput(text.str());
  absl::StatusOr<EplbResult> result =
      input.ok() ? RebalanceExperts(*input) : absl::StatusOr<EplbResult>(input.status());
  if (!result.ok()) {
    std::cerr << "eplb: " << result.status().message() << "\n";
    return 2;
  }
  std::cout << EplbResultToJson(*result) << "\n";
  return 0;
}

}  // namespace epinfer
