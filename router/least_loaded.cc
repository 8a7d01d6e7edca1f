#include "router/least_loaded.h"

namespace epinfer {

// Fewest outstanding tokens; ties go to fewer waiting sequences, then the lower rank.
size_t LeastLoadedPolicy::Pick(const std::vector<RankCandidate>& candidates) {
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i) {
    const RankCandidate& a = candidates[i];
    const RankCandidate& b = candidates[best];
    if (a.outstanding_tokens < b.outstanding_tokens ||
        (a.outstanding_tokens == b.outstanding_tokens && a.waiting < b.waiting)) {
      best = i;
    }
  }
  return best;
}

}  // namespace epinfer
