#ifndef EPINFER_ROUTER_ROUTING_POLICY_H_
#define EPINFER_ROUTER_ROUTING_POLICY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace epinfer {

// A DP rank a request could go to, as the router sees it.
struct RankCandidate {
  int rank = 0;
  std::string worker_id;
  // Prompt + max tokens of the requests this router has in flight on the rank.
  int64_t outstanding_tokens = 0;
  // From the rank's last heartbeat.
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_free = 0;
};

// The prefill/decode balancer: which DP rank runs a request (sgl-router's LoadBalancingPolicy).
class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  virtual const char* name() const = 0;
  // Index into `candidates` (never empty).
  virtual size_t Pick(const std::vector<RankCandidate>& candidates) = 0;
};

// By name: "least_loaded" (fewest outstanding tokens), "round_robin".
absl::StatusOr<std::unique_ptr<RoutingPolicy>> MakeRoutingPolicy(const std::string& name);

}  // namespace epinfer

#endif  // EPINFER_ROUTER_ROUTING_POLICY_H_
