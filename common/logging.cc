#include "common/logging.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "spdlog/sinks/stdout_sinks.h"

ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error, off.");

namespace epinfer {

absl::Status InitLogging(absl::string_view component) {
  const std::string name = absl::GetFlag(FLAGS_log_level);
  spdlog::level::level_enum level = spdlog::level::from_str(name);
  // from_str answers "off" for anything it does not know.
  if (level == spdlog::level::off && name != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad value for --log_level=", name, ": expected trace, debug, info, warn, error or off"));
  }
  std::shared_ptr<spdlog::logger> logger = spdlog::get(std::string(component));
  if (logger == nullptr) logger = spdlog::stderr_logger_mt(std::string(component));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %L %n: %v");
  logger->set_level(level);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  return absl::OkStatus();
}

}  // namespace epinfer
