#include "worker/model/rope.h"

#include <algorithm>
#include <cmath>

namespace epinfer {
namespace {

// The dimension index whose wavelength makes `num_rotations` turns over `max_positions`
// (HF yarn_find_correction_dim).
double CorrectionDim(double num_rotations, int64_t dim, double base, double max_positions) {
  return dim * std::log(max_positions / (num_rotations * 2 * M_PI)) / (2 * std::log(base));
}

}  // namespace

Rope::Rope(const ModelConfig& config) : dim_(config.qk_rope_head_dim) {
  const int64_t half = dim_ / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  const double base = config.rope_theta;
  for (int64_t i = 0; i < half; ++i) {
    inv_freq_[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / dim_);
  }
  if (!config.rope_scaling) return;
  const RopeScaling& s = *config.rope_scaling;
  const double original = static_cast<double>(s.original_max_position_embeddings);
  double low = std::floor(CorrectionDim(s.beta_fast, dim_, base, original));
  double high = std::ceil(CorrectionDim(s.beta_slow, dim_, base, original));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim_ - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    // ramp 0 → keep the original frequency (extrapolate), 1 → divide by factor (interpolate).
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolate = 1.0 - ramp;
    inv_freq_[i] = inv_freq_[i] / s.factor * (1.0 - extrapolate) + inv_freq_[i] * extrapolate;
  }
  mscale_ = YarnMscale(s.factor, s.mscale) / YarnMscale(s.factor, s.mscale_all_dim);
}

void Rope::Angles(int64_t position, float* cos_sin) const {
  for (size_t i = 0; i < inv_freq_.size(); ++i) {
    const double angle = static_cast<double>(position) * inv_freq_[i];
    cos_sin[2 * i] = static_cast<float>(std::cos(angle) * mscale_);
    cos_sin[2 * i + 1] = static_cast<float>(std::sin(angle) * mscale_);
  }
}

void Rope::Apply(const float* cos_sin, float* x, int64_t count, int64_t stride) const {
  for (int64_t v = 0; v < count; ++v) {
    float* p = x + v * stride;
    for (int64_t i = 0; i < dim_ / 2; ++i) {
      const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
      const float a = p[2 * i], b = p[2 * i + 1];
      p[2 * i] = a * c - b * s;
      p[2 * i + 1] = a * s + b * c;
    }
  }
}

}  // namespace epinfer
