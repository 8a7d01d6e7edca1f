#ifndef EPINFER_SCHEDULER_EPLB_JSON_H_
#define EPINFER_SCHEDULER_EPLB_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "scheduler/eplb.h"

namespace epinfer {

// {"weight": [[...] per layer], "num_replicas": R, "num_groups": G, "num_nodes": N,
//  "num_gpus": P}; errors name the field.
absl::StatusOr<EplbInput> ParseEplbInput(const std::string& json_text);
// {"phy2log": ..., "log2phy": ..., "logcnt": ...}
std::string EplbResultToJson(const EplbResult& result);

}  // namespace epinfer

#endif  // EPINFER_SCHEDULER_EPLB_JSON_H_
