#ifndef EPINFER_COMMON_LOGGING_H_
#define EPINFER_COMMON_LOGGING_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace epinfer {

// Configures spdlog's default logger: stderr, one line per event, prefixed with the component
// ("router", "worker[1]", ...). Level from --log_level (trace|debug|info|warn|error).
absl::Status InitLogging(absl::string_view component);

}  // namespace epinfer

#endif  // EPINFER_COMMON_LOGGING_H_
