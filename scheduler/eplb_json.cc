#include "scheduler/eplb_json.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace epinfer {

absl::StatusOr<EplbInput> ParseEplbInput(const std::string& json_text) {
  using Json = nlohmann::json;
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("input: not a JSON object");
  EplbInput in;
  auto weight = j.find("weight");
  if (weight == j.end() || !weight->is_array() || weight->empty()) {
    return absl::InvalidArgumentError("weight: expected a non-empty list of layers");
  }
  for (size_t l = 0; l < weight->size(); ++l) {
    const Json& layer = (*weight)[l];
    if (!layer.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat("weight[", l, "]: expected a list of loads"));
    }
    std::vector<double> loads;
    for (size_t e = 0; e < layer.size(); ++e) {
      if (!layer[e].is_number()) {
        return absl::InvalidArgumentError(absl::StrCat("weight[", l, "][", e, "]: not a number"));
      }
      loads.push_back(layer[e].get<double>());
    }
    in.weight.push_back(std::move(loads));
  }
  for (auto [name, field] : {std::pair<const char*, int*>{"num_replicas", &in.num_replicas},
                             {"num_groups", &in.num_groups},
                             {"num_nodes", &in.num_nodes},
                             {"num_gpus", &in.num_gpus}}) {
    auto it = j.find(name);
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": expected a positive integer"));
    }
    *field = static_cast<int>(it->get<int64_t>());
  }
  return in;
}

std::string EplbResultToJson(const EplbResult& r) {
  nlohmann::json j;
  j["phy2log"] = r.phy2log;
  j["log2phy"] = r.log2phy;
  j["logcnt"] = r.logcnt;
  return j.dump();
}

}  // namespace epinfer
