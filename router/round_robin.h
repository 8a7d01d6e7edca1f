#ifndef EPINFER_ROUTER_ROUND_ROBIN_H_
#define EPINFER_ROUTER_ROUND_ROBIN_H_

#include <atomic>

#include "router/routing_policy.h"

namespace epinfer {

class RoundRobinPolicy : public RoutingPolicy {
 public:
  const char* name() const override { return "round_robin"; }
  size_t Pick(const std::vector<RankCandidate>& candidates) override {
    return next_.fetch_add(1) % candidates.size();
  }

 private:
  std::atomic<uint64_t> next_{0};
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_ROUND_ROBIN_H_
