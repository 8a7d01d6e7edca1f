#ifndef EPINFER_WORKER_MODEL_WEIGHTS_H_
#define EPINFER_WORKER_MODEL_WEIGHTS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/kernels/linear.h"
#include "worker/kernels/weight_arena.h"
#include "worker/model/config.h"
#include "worker/model/placement.h"
#include "worker/model/safetensors.h"

namespace epinfer {

// SwiGLU MLP: down(silu(gate(x)) · up(x)).
struct MlpWeights {
  LinearWeight gate_proj;  // [intermediate, hidden]
  LinearWeight up_proj;    // [intermediate, hidden]
  LinearWeight down_proj;  // [hidden, intermediate]
};

struct LayerWeights {
  std::vector<float> input_layernorm;           // f32 [hidden_size]
  std::vector<float> post_attention_layernorm;  // f32 [hidden_size]

  // MLA. With q_lora_rank: q_a_proj → q_a_layernorm → q_b_proj; without: q_proj.
  LinearWeight q_a_proj;              // [q_lora_rank, hidden_size]
  std::vector<float> q_a_layernorm;   // f32 [q_lora_rank]
  LinearWeight q_b_proj;              // [num_attention_heads * qk_head_dim, q_lora_rank]
  LinearWeight q_proj;                // [num_attention_heads * qk_head_dim, hidden_size]
  LinearWeight kv_a_proj_with_mqa;    // [kv_lora_rank + qk_rope_head_dim, hidden_size]
  std::vector<float> kv_a_layernorm;  // f32 [kv_lora_rank]
  // [num_attention_heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]: prefill's naive form
  // multiplies the cached latents by all of it; decode's absorbed form reads the per-head copies
  // below (or, without kv_b_uk_t, its k_nope row slices untransposed).
  LinearWeight kv_b_proj;
  // Per head h: W_UK[h]ᵀ [kv_lora_rank, qk_nope_head_dim], the k_nope rows of kv_b_proj
  // transposed, in the same dtype (FP8 with its block scales) and panel-packed like the other
  // products, so that the absorbed attention's q_nope · W_UK[h] is an ordinary MatMul. Empty
  // where an FP8 head's rows straddle a 128-row scale block (no per-row scales could express
  // it); the absorbed attention then reads kv_b_proj untransposed.
  std::vector<LinearWeight> kv_b_uk_t;
  // Per head h: W_UV[h], the v rows of kv_b_proj (views), with their panels packed again one
  // head after another, so that a head group's output products stream one run of memory.
  std::vector<LinearWeight> kv_b_uv;
  LinearWeight o_proj;                // [hidden_size, num_attention_heads * v_head_dim]

  // Dense layers (layer < first_k_dense_replace).
  MlpWeights mlp;                     // intermediate = intermediate_size

  // MoE layers.
  LinearWeight gate;                             // [n_routed_experts, hidden_size]
  std::vector<float> e_score_correction_bias;    // f32 [n_routed_experts]; empty for V2
  std::vector<int32_t> local_experts;            // logical expert of each local slot
  std::vector<MlpWeights> experts;               // by local slot; intermediate = moe_intermediate_size
  MlpWeights shared_experts;                     // intermediate = moe_intermediate_size * n_shared_experts
  bool has_shared_experts = false;
};

// Every parameter a rank holds. Tensors stay in the checkpoint's memory map, in their stored
// dtype (F32, BF16, F8_E4M3 + scales); F16 and misaligned tensors are converted/copied into
// `owned`. Norm vectors and biases are converted to f32. On AVX-512 CPUs the BF16 and FP8 weights
// of products also get a panel-packed copy in `packed` (huge pages), in the same dtype
// (LinearWeight::panels), which the kernels read instead of the mapped bytes.
struct ModelWeights {
  LinearWeight embed_tokens;  // [vocab_size, hidden_size]
  std::vector<LayerWeights> layers;
  std::vector<float> norm;    // f32 [hidden_size]
  LinearWeight lm_head;       // [vocab_size, hidden_size]
  std::deque<std::vector<uint8_t>> owned;
  WeightArena packed;
};

// Loads what `rank` needs under `placement`: all non-expert weights and, at each MoE layer, only
// the routed experts of its slots (the other experts' bytes are never read). Errors name the file
// and tensor: missing, wrong shape, unsupported dtype, missing or misshapen scale_inv.
absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const ModelConfig& config,
                                         const ExpertPlacement& placement, int32_t rank);

// "model.layers.<layer>.<suffix>": Hugging Face names, which LoadWeights and make-model share
// (a GGUF loader would map llama.cpp's names instead).
std::string LayerTensorName(int64_t layer, const std::string& suffix);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_WEIGHTS_H_
