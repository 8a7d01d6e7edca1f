#ifndef EPINFER_ROUTER_STOP_MATCHER_H_
#define EPINFER_ROUTER_STOP_MATCHER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace epinfer {

// Stop strings over streamed text. Text that could still become a stop string is held back
// until decided; on a match, the text before it is released and the stop string itself is not.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  struct Result {
    std::string emit;
    std::optional<std::string> matched;
  };
  // After a match, further text is ignored.
  Result Push(absl::string_view text);
  // The end of the stream: whatever was held back.
  std::string Finish();

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool matched_ = false;
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_STOP_MATCHER_H_
