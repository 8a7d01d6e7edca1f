#include "router/routing_policy.h"

#include "absl/strings/str_cat.h"
#include "router/least_loaded.h"
#include "router/round_robin.h"

namespace epinfer {

absl::StatusOr<std::unique_ptr<RoutingPolicy>> MakeRoutingPolicy(const std::string& name) {
  if (name == "least_loaded") return std::make_unique<LeastLoadedPolicy>();
  if (name == "round_robin") return std::make_unique<RoundRobinPolicy>();
  return absl::InvalidArgumentError(absl::StrCat("routing policy \"", name,
                                                 "\": expected least_loaded or round_robin"));
}

}  // namespace epinfer
