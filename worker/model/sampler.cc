#include "worker/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace epinfer {

absl::Status ValidateSamplingOptions(const SamplingOptions& o, int64_t vocab_size) {
  if (!(o.temperature >= 0 && o.temperature <= 2)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature ", o.temperature,
                                                   " is outside [0, 2]"));
  }
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p ", o.top_p, " is outside (0, 1]"));
  }
  if (o.top_k < 0 || o.top_k > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("top_k ", o.top_k, " is outside [0, ",
                                                   vocab_size, "]"));
  }
  if (o.logprobs < 0 || o.logprobs > 20) {
    return absl::InvalidArgumentError(absl::StrCat("logprobs ", o.logprobs,
                                                   " is outside [0, 20]"));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

SampledToken Sampler::Next(const float* logits, int64_t vocab) {
  SampledToken out;
  // Raw log-softmax for the reported logprobs.
  const float max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max));
  const double log_z = max + std::log(sum);
  auto logprob = [&](int32_t i) { return static_cast<float>(logits[i] - log_z); };

  if (options_.temperature == 0) {
    out.token = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  } else {
    // Candidates by descending logit (ties: lower id), cut by top-k, then by top-p mass.
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    int64_t keep = options_.top_k > 0 ? std::min<int64_t>(options_.top_k, vocab) : vocab;
    auto by_logit = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
    std::vector<double> p(static_cast<size_t>(keep));
    double total = 0;
    for (int64_t i = 0; i < keep; ++i) {
      p[i] = std::exp((static_cast<double>(logits[order[i]]) - max) / options_.temperature);
      total += p[i];
    }
    if (options_.top_p < 1) {
      double mass = 0;
      int64_t n = 0;
      while (n < keep && mass < options_.top_p * total) mass += p[n++];
      keep = std::max<int64_t>(n, 1);
      total = std::accumulate(p.begin(), p.begin() + keep, 0.0);
    }
    // One uniform draw in [0, 1) with 53 random bits.
    const double u = static_cast<double>(rng_() >> 11) * 0x1p-53 * total;
    double cumulative = 0;
    out.token = order[keep - 1];
    for (int64_t i = 0; i < keep; ++i) {
      cumulative += p[i];
      if (u < cumulative) {
        out.token = order[i];
        break;
      }
    }
  }
  out.logprob = logprob(out.token);
  if (options_.logprobs > 0) {
    const int64_t n = std::min<int64_t>(options_.logprobs, vocab);
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < n; ++i) out.top.emplace_back(order[i], logprob(order[i]));
  }
  return out;
}

}  // namespace epinfer
