#include "router/stop_matcher.h"

namespace epinfer {

StopMatcher::Result StopMatcher::Push(absl::string_view text) {
  Result result;
  if (matched_) return result;
  held_.append(text.data(), text.size());
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t at = held_.find(stop);
    if (at != std::string::npos && (first == std::string::npos || at < first)) {
      first = at;
      result.matched = stop;
    }
  }
  if (first != std::string::npos) {
    matched_ = true;
    result.emit = held_.substr(0, first);
    held_.clear();
    return result;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    for (size_t n = std::min(stop.size() - 1, held_.size()); n > keep; --n) {
      if (held_.compare(held_.size() - n, n, stop, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  result.emit = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return result;
}

std::string StopMatcher::Finish() {
  std::string rest;
  if (!matched_) rest.swap(held_);
  return rest;
}

}  // namespace epinfer
