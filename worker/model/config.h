#ifndef EPINFER_WORKER_MODEL_CONFIG_H_
#define EPINFER_WORKER_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace epinfer {

// YaRN context extension, as `rope_scaling` in config.json.
struct RopeScaling {
  std::string type;  // "yarn" (only kind DeepSeek-V3 uses)
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32;
  double beta_slow = 1;
  double mscale = 1;
  double mscale_all_dim = 0;
};

// DeepSeek-V3 / R1 / V2 hyperparameters, named as Hugging Face's config.json names them, read
// once. Shapes in comments below refer to these names.
struct ModelConfig {
  std::string model_type;  // "deepseek_v3", "deepseek_v2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense MLP layers
  int64_t moe_intermediate_size = 0;  // each routed (and shared) expert
  int64_t num_hidden_layers = 0;
  int64_t num_nextn_predict_layers = 0;  // MTP layers stored after the main ones (not run)
  int64_t num_attention_heads = 0;
  int64_t n_shared_experts = 0;
  int64_t n_routed_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  std::string topk_method;   // "noaux_tc" (V3), "group_limited_greedy", "greedy" (V2)
  std::string scoring_func;  // "sigmoid" (V3), "softmax" (V2)
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  int64_t q_lora_rank = 0;  // 0 when config.json has null: plain q_proj (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  // quantization_config: FP8 e4m3 with 128×128 weight_scale_inv blocks.
  bool fp8_weights = false;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Values per token per layer in the latent KV cache (absorbed MLA): 576 for V3.
  int64_t kv_cache_dim() const { return kv_lora_rank + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  int64_t num_moe_layers() const;
  // Weights of the main model (embedding, layers, norm, head; MTP layers excluded).
  int64_t ParameterCount() const;
  // Weights one token touches: attention and dense layers in full, the active routed experts.
  int64_t ActiveParameterCount() const;
  // KV cache bytes per token over all layers, at `bytes_per_value` (2 for BF16).
  int64_t KvBytesPerToken(int bytes_per_value) const {
    return kv_cache_dim() * num_hidden_layers * bytes_per_value;
  }
  // Attention softmax scale: qk_head_dim^-0.5 × mscale², YaRN's attention temperature, as Hugging
  // Face's DeepseekV3Attention applies it.
  double SoftmaxScale() const;
};

// Parses and validates a config.json. Errors name the field: "config.json: n_group: 3 does not
// divide n_routed_experts 256".
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// YaRN's mscale: 0.1 · m · ln(s) + 1 for s > 1 (DeepSeek-V3 model.py / HF yarn_get_mscale).
double YarnMscale(double scale, double mscale);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_CONFIG_H_
