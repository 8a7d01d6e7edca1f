#include "worker/model/gate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace epinfer {

namespace {

// RouteToken's working arrays, per thread, kept across calls: a decode step routes each token of
// every MoE layer, and six fresh vectors a token cost more than the routing itself.
struct RouteScratch {
  std::vector<float> scores, selection, group_score;
  std::vector<int32_t> groups, order;
  std::vector<char> kept;
};

template <class T>
T* Fill(std::vector<T>& v, int64_t size) {
  v.resize(static_cast<size_t>(size));
  return v.data();
}

}  // namespace

void RouteToken(const ModelConfig& c, const float* logits, const float* bias, int32_t* experts,
                float* weights) {
  thread_local RouteScratch scratch;
  const int64_t n = c.n_routed_experts;
  float* scores = Fill(scratch.scores, n);
  std::copy(logits, logits + n, scores);
  if (c.scoring_func == "softmax") {
    const float max = *std::max_element(scores, scores + n);
    double sum = 0;
    for (int64_t e = 0; e < n; ++e) sum += (scores[e] = std::exp(scores[e] - max));
    for (int64_t e = 0; e < n; ++e) scores[e] = static_cast<float>(scores[e] / sum);
  } else {
    for (int64_t e = 0; e < n; ++e) scores[e] = 1.0f / (1.0f + std::exp(-scores[e]));
  }
  float* selection = Fill(scratch.selection, n);
  for (int64_t e = 0; e < n; ++e) selection[e] = scores[e] + (bias != nullptr ? bias[e] : 0.0f);

  if (c.topk_method != "greedy" && c.n_group > 1) {
    const int64_t per_group = n / c.n_group;
    const bool top2 = c.topk_method == "noaux_tc";
    float* group_score = Fill(scratch.group_score, c.n_group);
    for (int64_t g = 0; g < c.n_group; ++g) {
      const float* s = selection + g * per_group;
      if (top2) {
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
    int32_t* groups = Fill(scratch.groups, c.n_group);
    std::iota(groups, groups + c.n_group, 0);
    std::stable_sort(groups, groups + c.n_group,
                     [&](int32_t a, int32_t b) { return group_score[a] > group_score[b]; });
    char* kept = Fill(scratch.kept, c.n_group);
    std::fill(kept, kept + c.n_group, 0);
    for (int64_t i = 0; i < c.topk_group; ++i) kept[groups[i]] = 1;
    for (int64_t e = 0; e < n; ++e) {
      if (!kept[e / per_group]) selection[e] = -std::numeric_limits<float>::infinity();
    }
  }

  int32_t* order = Fill(scratch.order, n);
  std::iota(order, order + n, 0);
  const int64_t k = c.num_experts_per_tok;
  std::partial_sort(order, order + k, order + n, [&](int32_t a, int32_t b) {
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
