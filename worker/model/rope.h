#ifndef EPINFER_WORKER_MODEL_ROPE_H_
#define EPINFER_WORKER_MODEL_ROPE_H_

#include <cstdint>
#include <vector>

#include "worker/model/config.h"

namespace epinfer {

// Rotary position embedding of the qk_rope_head_dim part, with YaRN when config.rope_scaling is
// set — applied always, as Hugging Face's DeepseekV3YarnRotaryEmbedding does (DeepSeek's
// model.py only when max_seq_len exceeds the original length). Pairs are interleaved
// (2i, 2i+1) as in model.py's apply_rotary_emb.
class Rope {
 public:
  explicit Rope(const ModelConfig& config);

  // cos/sin of every pair at `position`, scaled by YaRN's mscale ratio: out[2i] = cos, [2i+1] = sin.
  void Angles(int64_t position, float* cos_sin) const;
  // Rotates `count` vectors of dim values in place with the angles from Angles().
  void Apply(const float* cos_sin, float* x, int64_t count, int64_t stride) const;

  const std::vector<double>& inv_freq() const { return inv_freq_; }
  double mscale() const { return mscale_; }
  int64_t dim() const { return dim_; }

 private:
  int64_t dim_;
  std::vector<double> inv_freq_;  // [dim / 2]
  double mscale_ = 1.0;           // cos/sin factor: mscale(factor, mscale) / mscale(factor, mscale_all_dim)
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_MODEL_ROPE_H_
