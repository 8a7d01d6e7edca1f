#ifndef EPINFER_ROUTER_LEAST_LOADED_H_
#define EPINFER_ROUTER_LEAST_LOADED_H_

#include "router/routing_policy.h"

namespace epinfer {

class LeastLoadedPolicy : public RoutingPolicy {
 public:
  const char* name() const override { return "least_loaded"; }
  size_t Pick(const std::vector<RankCandidate>& candidates) override;
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_LEAST_LOADED_H_
