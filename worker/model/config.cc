#include "worker/model/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace epinfer {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, ": ", what));
}

// Reads an integer field; `required` missing or a non-integer is an error.
absl::Status ReadInt(const Json& j, const std::string& field, bool required, int64_t min,
                     int64_t max, int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(field, "missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return FieldError(field, "expected an integer, got " + it->dump());
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max) {
    return FieldError(field, absl::StrCat(v, " is out of range [", min, ", ", max, "]"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& j, const std::string& field, bool required, double min,
                        double max, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(field, "missing") : absl::OkStatus();
  }
  if (!it->is_number()) return FieldError(field, "expected a number, got " + it->dump());
  const double v = it->get<double>();
  if (!(v >= min && v <= max)) {
    return FieldError(field, absl::StrCat(v, " is out of range [", min, ", ", max, "]"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadBool(const Json& j, const std::string& field, bool* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(field, "expected true or false, got " + it->dump());
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const Json& j, const std::string& field,
                        const std::vector<std::string>& allowed, std::string* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(field, "expected a string, got " + it->dump());
  std::string v = it->get<std::string>();
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    return FieldError(field, absl::StrCat("\"", v, "\" is not supported (expected one of ",
                                          absl::StrJoin(allowed, ", "), ")"));
  }
  *out = std::move(v);
  return absl::OkStatus();
}

constexpr int64_t kMaxDim = int64_t{1} << 24;

// Errors from fields of a nested object name the full path ("rope_scaling.factor").
absl::Status Nested(const std::string& object, absl::Status status) {
  if (status.ok()) return status;
  std::string message(status.message());
  const std::string prefix = "config.json: ";
  if (message.rfind(prefix, 0) == 0) message.insert(prefix.size(), object + ".");
  return absl::Status(status.code(), message);
}

// The fields of a rope_scaling object (names relative to it).
absl::Status ParseRopeScalingFields(const Json::const_iterator& it, ModelConfig& c);

absl::Status ParseRopeScaling(const Json& j, ModelConfig& c) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError("rope_scaling", "expected an object or null");
  return Nested("rope_scaling", ParseRopeScalingFields(it, c));
}

absl::Status ParseRopeScalingFields(const Json::const_iterator& it, ModelConfig& c) {
  RopeScaling r;
  std::string type;
  if (it->contains("type")) {
    RETURN_IF_ERROR(ReadString(*it, "type", {"yarn"}, &type));
  } else {
    RETURN_IF_ERROR(ReadString(*it, "rope_type", {"yarn"}, &type));
  }
  if (type.empty()) return FieldError("type", "missing (only \"yarn\" is supported)");
  r.type = type;
  RETURN_IF_ERROR(ReadDouble(*it, "factor", true, 1.0, 1e6, &r.factor));
  RETURN_IF_ERROR(ReadInt(*it, "original_max_position_embeddings", true, 1, kMaxDim,
                          &r.original_max_position_embeddings));
  RETURN_IF_ERROR(ReadDouble(*it, "beta_fast", false, 0, 1e6, &r.beta_fast));
  RETURN_IF_ERROR(ReadDouble(*it, "beta_slow", false, 0, 1e6, &r.beta_slow));
  RETURN_IF_ERROR(ReadDouble(*it, "mscale", false, 0, 1e6, &r.mscale));
  RETURN_IF_ERROR(ReadDouble(*it, "mscale_all_dim", false, 0, 1e6, &r.mscale_all_dim));
  c.rope_scaling = r;
  return absl::OkStatus();
}

absl::Status Validate(const ModelConfig& c) {
  if (c.n_routed_experts > 0) {
    if (c.n_routed_experts % c.n_group != 0) {
      return FieldError("n_group", absl::StrCat(c.n_group, " does not divide n_routed_experts ",
                                                c.n_routed_experts));
    }
    if (c.topk_group > c.n_group) {
      return FieldError("topk_group",
                        absl::StrCat(c.topk_group, " exceeds n_group ", c.n_group));
    }
    if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group)) {
      return FieldError("num_experts_per_tok",
                        absl::StrCat(c.num_experts_per_tok, " exceeds the experts of topk_group (",
                                     c.topk_group * (c.n_routed_experts / c.n_group), ")"));
    }
    if (c.moe_intermediate_size <= 0) return FieldError("moe_intermediate_size", "missing");
  }
  if (c.first_k_dense_replace > 0 && c.intermediate_size <= 0) {
    return FieldError("intermediate_size", "missing (needed by the dense layers)");
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return FieldError("qk_rope_head_dim", absl::StrCat(c.qk_rope_head_dim, " is not even"));
  }
  return absl::OkStatus();
}

}  // namespace

double YarnMscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double ModelConfig::SoftmaxScale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling && rope_scaling->mscale_all_dim != 0) {
    const double m = YarnMscale(rope_scaling->factor, rope_scaling->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

int64_t ModelConfig::num_moe_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < num_hidden_layers; ++l) n += is_moe_layer(l) ? 1 : 0;
  return n;
}

namespace {

// Weights of one layer's attention (MLA), with its two norms.
int64_t AttentionParameters(const ModelConfig& c) {
  const int64_t h = c.hidden_size, heads = c.num_attention_heads;
  int64_t n = 2 * h;  // input_layernorm, post_attention_layernorm
  if (c.q_lora_rank > 0) {
    n += h * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * c.qk_head_dim();
  } else {
    n += h * heads * c.qk_head_dim();
  }
  n += h * c.kv_cache_dim() + c.kv_lora_rank;
  n += c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim);
  n += heads * c.v_head_dim * h;
  return n;
}

int64_t SwiGluParameters(int64_t hidden, int64_t intermediate) { return 3 * hidden * intermediate; }

}  // namespace

int64_t ModelConfig::ParameterCount() const {
  int64_t n = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + hidden_size;
  for (int64_t l = 0; l < num_hidden_layers; ++l) {
    n += AttentionParameters(*this);
    if (is_moe_layer(l)) {
      n += n_routed_experts * hidden_size + n_routed_experts;  // gate + correction bias
      n += (n_routed_experts + n_shared_experts) * SwiGluParameters(hidden_size,
                                                                    moe_intermediate_size);
    } else {
      n += SwiGluParameters(hidden_size, intermediate_size);
    }
  }
  return n;
}

int64_t ModelConfig::ActiveParameterCount() const {
  int64_t n = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + hidden_size;
  for (int64_t l = 0; l < num_hidden_layers; ++l) {
    n += AttentionParameters(*this);
    if (is_moe_layer(l)) {
      n += n_routed_experts * hidden_size + n_routed_experts;
      n += (num_experts_per_tok + n_shared_experts) *
           SwiGluParameters(hidden_size, moe_intermediate_size);
    } else {
      n += SwiGluParameters(hidden_size, intermediate_size);
    }
  }
  return n;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: expected a JSON object");
  ModelConfig c;
  RETURN_IF_ERROR(ReadString(j, "model_type", {"deepseek_v3", "deepseek_v2"}, &c.model_type));
  RETURN_IF_ERROR(ReadInt(j, "vocab_size", true, 1, kMaxDim, &c.vocab_size));
  RETURN_IF_ERROR(ReadInt(j, "hidden_size", true, 1, kMaxDim, &c.hidden_size));
  RETURN_IF_ERROR(ReadInt(j, "intermediate_size", false, 1, kMaxDim, &c.intermediate_size));
  RETURN_IF_ERROR(
      ReadInt(j, "moe_intermediate_size", false, 1, kMaxDim, &c.moe_intermediate_size));
  RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", true, 1, 4096, &c.num_hidden_layers));
  RETURN_IF_ERROR(
      ReadInt(j, "num_nextn_predict_layers", false, 0, 64, &c.num_nextn_predict_layers));
  RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", true, 1, 4096, &c.num_attention_heads));
  RETURN_IF_ERROR(ReadInt(j, "n_shared_experts", false, 0, 64, &c.n_shared_experts));
  RETURN_IF_ERROR(ReadInt(j, "n_routed_experts", false, 0, 65536, &c.n_routed_experts));
  if (c.n_routed_experts > 0) {
    RETURN_IF_ERROR(ReadInt(j, "num_experts_per_tok", true, 1, c.n_routed_experts,
                            &c.num_experts_per_tok));
    RETURN_IF_ERROR(ReadInt(j, "n_group", false, 1, c.n_routed_experts, &c.n_group));
    RETURN_IF_ERROR(ReadInt(j, "topk_group", false, 1, c.n_routed_experts, &c.topk_group));
  }
  c.topk_method = c.model_type == "deepseek_v2" ? "greedy" : "noaux_tc";
  RETURN_IF_ERROR(
      ReadString(j, "topk_method", {"noaux_tc", "group_limited_greedy", "greedy"}, &c.topk_method));
  c.scoring_func = c.model_type == "deepseek_v2" ? "softmax" : "sigmoid";
  RETURN_IF_ERROR(ReadString(j, "scoring_func", {"sigmoid", "softmax"}, &c.scoring_func));
  RETURN_IF_ERROR(ReadBool(j, "norm_topk_prob", &c.norm_topk_prob));
  RETURN_IF_ERROR(
      ReadDouble(j, "routed_scaling_factor", false, 0, 1e6, &c.routed_scaling_factor));
  RETURN_IF_ERROR(ReadInt(j, "first_k_dense_replace", false, 0, c.num_hidden_layers,
                          &c.first_k_dense_replace));
  RETURN_IF_ERROR(ReadInt(j, "moe_layer_freq", false, 1, 4096, &c.moe_layer_freq));
  RETURN_IF_ERROR(ReadInt(j, "q_lora_rank", false, 1, kMaxDim, &c.q_lora_rank));
  RETURN_IF_ERROR(ReadInt(j, "kv_lora_rank", true, 1, kMaxDim, &c.kv_lora_rank));
  RETURN_IF_ERROR(ReadInt(j, "qk_nope_head_dim", true, 1, 65536, &c.qk_nope_head_dim));
  RETURN_IF_ERROR(ReadInt(j, "qk_rope_head_dim", true, 2, 65536, &c.qk_rope_head_dim));
  RETURN_IF_ERROR(ReadInt(j, "v_head_dim", true, 1, 65536, &c.v_head_dim));
  RETURN_IF_ERROR(
      ReadInt(j, "max_position_embeddings", true, 1, kMaxDim, &c.max_position_embeddings));
  RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", false, 1e-12, 1, &c.rms_norm_eps));
  RETURN_IF_ERROR(ReadDouble(j, "rope_theta", false, 1, 1e12, &c.rope_theta));
  RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  RETURN_IF_ERROR(ReadInt(j, "bos_token_id", false, 0, c.vocab_size - 1, &c.bos_token_id));
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    const Json ids = it->is_array() ? *it : Json::array({*it});
    for (const Json& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= c.vocab_size) {
        return FieldError("eos_token_id", "expected token ids below vocab_size, got " + id.dump());
      }
      c.eos_token_ids.push_back(id.get<int64_t>());
    }
  }
  if (std::string act = "silu"; j.contains("hidden_act")) {
    RETURN_IF_ERROR(ReadString(j, "hidden_act", {"silu"}, &act));
  }
  // DeepSeek-V2/V3's attention projections have no biases (model.py's Linear layers carry none),
  // and no kernel here adds one: a config that asks for them must not load without them.
  if (bool bias = false; j.contains("attention_bias")) {
    RETURN_IF_ERROR(ReadBool(j, "attention_bias", &bias));
    if (bias) return FieldError("attention_bias", "true is not supported (expected false)");
  }
  RETURN_IF_ERROR(ParseRopeScaling(j, c));
  if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null()) {
    std::string method, fmt = "e4m3";
    RETURN_IF_ERROR(Nested("quantization_config", ReadString(*it, "quant_method", {"fp8"}, &method)));
    RETURN_IF_ERROR(Nested("quantization_config", ReadString(*it, "fmt", {"e4m3"}, &fmt)));
    if (auto bs = it->find("weight_block_size"); bs != it->end() &&
                                                  *bs != Json::array({128, 128})) {
      return FieldError("quantization_config.weight_block_size",
                        bs->dump() + " is not supported (expected [128, 128])");
    }
    c.fp8_weights = method == "fp8";
  }
  RETURN_IF_ERROR(Validate(c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace epinfer
