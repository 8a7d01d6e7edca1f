#include "tokenizer/tokenizer_cli.h"

#include <cstdint>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(std::string, tokenizer, "",
          "tokenizer.json, or a directory holding tokenizer.json and tokenizer_config.json.");
ABSL_FLAG(bool, allow_special_tokens, false,
          "tokenize: recognise added tokens such as <｜User｜> written in the text.");
ABSL_FLAG(bool, skip_special_tokens, false, "detokenize: leave special tokens out of the text.");
ABSL_FLAG(bool, json_lines, false,
          "One JSON input per stdin line and one JSON output per stdout line.");
ABSL_FLAG(bool, stream_pieces, false,
          "detokenize: print the pieces that streaming detokenization emits, as a JSON array.");

namespace epinfer {
namespace {

using json = nlohmann::json;

constexpr char kTokenizeUsage[] = "--tokenizer PATH [--allow_special_tokens] [--json_lines] < text";
constexpr char kDetokenizeUsage[] =
    "--tokenizer PATH [--skip_special_tokens] [--stream_pieces] [--json_lines] < ids.json";

// Parses flags, loads the tokenizer; nullptr (after printing why) on failure.
std::unique_ptr<Tokenizer> Setup(int argc, char** argv, const char* usage, int* exit_code) {
  std::vector<std::string> positional = ParseFlagsOrExit(argc, argv, usage);
  if (!positional.empty()) ExitWithUsageError(argv[0], usage, "unexpected positional argument");
  const std::string path = absl::GetFlag(FLAGS_tokenizer);
  if (path.empty()) ExitWithUsageError(argv[0], usage, "--tokenizer is required");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(path);
  if (!tokenizer.ok()) {
    std::cerr << argv[0] << ": " << tokenizer.status().message() << "\n";
    *exit_code = 1;
    return nullptr;
  }
  return std::move(*tokenizer);
}

std::string ReadStdin() {
  std::ostringstream buffer;
  buffer << std::cin.rdbuf();
  return buffer.str();
}

std::string ErrorJson(absl::string_view message) {
  return json{{"error", std::string(message)}}.dump(-1, ' ', false,
                                                    json::error_handler_t::replace);
}

// Ids from JSON text, or an error naming what is wrong.
absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view text) {
  json value;
  try {
    value = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("ids: ", e.what()));
  }
  if (!value.is_array()) return absl::InvalidArgumentError("ids: expected a JSON array");
  std::vector<int32_t> ids;
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_number_integer() || value[i].get<int64_t>() < INT32_MIN ||
        value[i].get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: expected an integer id"));
    }
    ids.push_back(static_cast<int32_t>(value[i].get<int64_t>()));
  }
  return ids;
}

absl::StatusOr<std::string> Detokenize(const Tokenizer& tokenizer, absl::string_view input,
                                       bool as_json) {
  absl::StatusOr<std::vector<int32_t>> ids = ParseIds(input);
  if (!ids.ok()) return ids.status();
  const bool skip = absl::GetFlag(FLAGS_skip_special_tokens);
  if (absl::GetFlag(FLAGS_stream_pieces)) {
    StreamDecoder decoder(tokenizer, skip);
    json pieces = json::array();
    for (size_t i = 0; i < ids->size(); ++i) {
      absl::StatusOr<std::string> piece = decoder.Push((*ids)[i]);
      if (!piece.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: ", piece.status().message()));
      }
      pieces.push_back(*piece);
    }
    pieces.push_back(decoder.Finish());
    return pieces.dump();
  }
  absl::StatusOr<std::string> text = tokenizer.Decode(*ids, skip);
  if (!text.ok()) return text.status();
  return as_json ? json(*text).dump() : *text;
}

}  // namespace

int RunTokenize(int argc, char** argv) {
  int exit_code = 0;
  std::unique_ptr<Tokenizer> tokenizer = Setup(argc, argv, kTokenizeUsage, &exit_code);
  if (tokenizer == nullptr) return exit_code;
  EncodeOptions options;
  options.allow_special_tokens = absl::GetFlag(FLAGS_allow_special_tokens);
  if (!absl::GetFlag(FLAGS_json_lines)) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(ReadStdin(), options);
    if (!ids.ok()) {
      std::cerr << argv[0] << ": " << ids.status().message() << "\n";
      return 1;
    }
    std::cout << json(*ids).dump() << "\n";
    return 0;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    std::string text;
    try {
      text = json::parse(line).get<std::string>();
    } catch (const json::exception& e) {
      std::cout << ErrorJson(absl::StrCat("input: ", e.what())) << "\n";
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, options);
    std::cout << (ids.ok() ? json(*ids).dump() : ErrorJson(ids.status().message())) << "\n";
  }
  return 0;
}

int RunDetokenize(int argc, char** argv) {
  int exit_code = 0;
  std::unique_ptr<Tokenizer> tokenizer = Setup(argc, argv, kDetokenizeUsage, &exit_code);
  if (tokenizer == nullptr) return exit_code;
  if (!absl::GetFlag(FLAGS_json_lines)) {
    absl::StatusOr<std::string> text = Detokenize(*tokenizer, ReadStdin(), false);
    if (!text.ok()) {
      std::cerr << argv[0] << ": " << text.status().message() << "\n";
      return 1;
    }
    std::cout << *text;
    return 0;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    absl::StatusOr<std::string> text = Detokenize(*tokenizer, line, true);
    std::cout << (text.ok() ? *text : ErrorJson(text.status().message())) << "\n";
  }
  return 0;
}

}  // namespace epinfer
