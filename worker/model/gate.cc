#include "worker/model/gate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace epinfer {

void RouteToken(const ModelConfig& c, const float* logits, const float* bias, int32_t* experts,
                float* weights) {
  const int64_t n = c.n_routed_experts;
  std::vector<float> scores(logits, logits + n);
  if (c.scoring_func == "softmax") {
    const float max = *std::max_element(scores.begin(), scores.end());
    double sum = 0;
    for (float& s : scores) sum += (s = std::exp(s - max));
    for (float& s : scores) s = static_cast<float>(s / sum);
  } else {
    for (float& s : scores) s = 1.0f / (1.0f + std::exp(-s));
  }
  std::vector<float> selection(scores);
  if (bias != nullptr) {
    for (int64_t e = 0; e < n; ++e) selection[e] += bias[e];
  }

  if (c.topk_method != "greedy" && c.n_group > 1) {
    const int64_t per_group = n / c.n_group;
    std::vector<float> group_score(static_cast<size_t>(c.n_group));
    for (int64_t g = 0; g < c.n_group; ++g) {
      const float* s = selection.data() + g * per_group;
      if (c.topk_method == "noaux_tc") {
        // Sum of the group's two best.
        float best = -std::numeric_limits<float>::infinity(), second = best;
        for (int64_t i = 0; i < per_group; ++i) {
          if (s[i] > best) {
            second = best;
            best = s[i];
          } else if (s[i] > second) {
            second = s[i];
          }
        }
        group_score[g] = per_group > 1 ? best + second : best;
      } else {
        group_score[g] = *std::max_element(s, s + per_group);
      }
    }
    std::vector<int64_t> groups(static_cast<size_t>(c.n_group));
    std::iota(groups.begin(), groups.end(), 0);
    std::stable_sort(groups.begin(), groups.end(),
                     [&](int64_t a, int64_t b) { return group_score[a] > group_score[b]; });
    std::vector<bool> kept(static_cast<size_t>(c.n_group), false);
    for (int64_t i = 0; i < c.topk_group; ++i) kept[groups[i]] = true;
    for (int64_t e = 0; e < n; ++e) {
      if (!kept[e / per_group]) selection[e] = -std::numeric_limits<float>::infinity();
    }
  }

  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = c.num_experts_per_tok;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return selection[a] > selection[b] || (selection[a] == selection[b] && a < b);
  });
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    experts[i] = order[i];
    weights[i] = scores[order[i]];
    sum += weights[i];
  }
  if (c.norm_topk_prob && k > 1) {
    for (int64_t i = 0; i < k; ++i) weights[i] = static_cast<float>(weights[i] / (sum + 1e-20));
  }
  for (int64_t i = 0; i < k; ++i) {
    weights[i] = static_cast<float>(weights[i] * c.routed_scaling_factor);
  }
}

}  // namespace epinfer
