#ifndef EPINFER_WORKER_MODEL_GATE_H_
#define EPINFER_WORKER_MODEL_GATE_H_

#include <cstdint>

#include "worker/model/config.h"

namespace epinfer {

// The MoE router for one token (DeepSeek-V3 model.py Gate.forward / HF MoEGate):
//   scores = sigmoid(logits) (V3) or softmax(logits) (V2);
//   selection = scores + e_score_correction_bias (bias changes selection only);
//   noaux_tc: groups scored by the sum of their top-2 selection scores, topk_group groups kept,
//   the rest masked with −inf (unselectable); group_limited_greedy: groups scored by their max;
//   greedy: no groups;
//   top num_experts_per_tok experts of the masked selection (ties: lower id first);
//   weights = unbiased scores of the chosen, normalised when norm_topk_prob, × routed_scaling_factor.
// logits: f32 [n_routed_experts]; bias: [n_routed_experts] or null; experts, weights:
// [num_experts_per_tok], in descending selection order.
void RouteToken(const ModelConfig& config, const float* logits, const float* bias,
                int32_t* experts, float* weights);

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_GATE_H_
