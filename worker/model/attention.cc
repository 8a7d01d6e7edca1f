#include "worker/model/attention.h"

#include <algorithm>
#include <cmath>

#include "worker/kernels/linear.h"
#include "worker/kernels/ops.h"

namespace epinfer {

// Multi-head latent attention (model.py MLA.forward) for every new token of the batch.
void MlaAttention(const ModelConfig& c, const LayerWeights& w, const Rope& rope, int64_t layer,
                  const float* h, absl::Span<const SequenceStep> batch,
                  const std::vector<int64_t>& positions, KvCache& cache, AttentionForm form,
                  float* out) {
  const int64_t T = static_cast<int64_t>(positions.size());
  const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim,
                rope_dim = c.qk_rope_head_dim, qk = c.qk_head_dim(), vd = c.v_head_dim,
                kvl = c.kv_lora_rank, kvd = c.kv_cache_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(c.SoftmaxScale());

  // Queries: [T, heads, qk_nope | qk_rope].
  std::vector<float> q(static_cast<size_t>(T * heads * qk));
  if (c.q_lora_rank > 0) {
    std::vector<float> qa(static_cast<size_t>(T * c.q_lora_rank));
    MatMul(h, T, w.q_a_proj, qa.data());
    RmsNorm(qa.data(), T, c.q_lora_rank, w.q_a_layernorm.data(), eps, qa.data());
    MatMul(qa.data(), T, w.q_b_proj, q.data());
  } else {
    MatMul(h, T, w.q_proj, q.data());
  }
  // Latent [kv_lora | k_pe] per token: normalise the latent, rotate the rope parts, cache both.
  std::vector<float> kv(static_cast<size_t>(T * kvd));
  MatMul(h, T, w.kv_a_proj_with_mqa, kv.data());
  std::vector<float> cos_sin(static_cast<size_t>(rope_dim));
  {
    int64_t t = 0;
    for (const SequenceStep& s : batch) {
      for (size_t i = 0; i < s.tokens.size(); ++i, ++t) {
        float* kv_t = kv.data() + t * kvd;
        RmsNorm(kv_t, 1, kvl, w.kv_a_layernorm.data(), eps, kv_t);
        rope.Angles(positions[t], cos_sin.data());
        rope.Apply(cos_sin.data(), kv_t + kvl, 1, rope_dim);
        rope.Apply(cos_sin.data(), q.data() + t * heads * qk + nope, heads, qk);
        std::copy(kv_t, kv_t + kvd, cache.At(*s.kv, layer, positions[t]));
      }
    }
  }

  std::vector<float> o(static_cast<size_t>(T * heads * vd));
  int64_t t0 = 0;
  for (const SequenceStep& s : batch) {
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    const int64_t total = s.start_pos + len;  // keys: positions [0, total)
    const bool absorbed = form == AttentionForm::kAbsorbed || (form == AttentionForm::kAuto && len == 1);
    if (!absorbed) {
      // Naive: expand every cached latent into per-head k_nope and v.
      std::vector<float> latent(static_cast<size_t>(total * kvl));
      for (int64_t p = 0; p < total; ++p) {
        const float* cached = cache.At(*s.kv, layer, p);
        std::copy(cached, cached + kvl, latent.data() + p * kvl);
      }
      std::vector<float> kvb(static_cast<size_t>(total * heads * (nope + vd)));
      MatMul(latent.data(), total, w.kv_b_proj, kvb.data());
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t i = 0; i < len; ++i) {
        for (int64_t hd = 0; hd < heads; ++hd) {
          const int64_t pos = s.start_pos + i;
          const float* qh = q.data() + ((t0 + i) * heads + hd) * qk;
          std::vector<float> scores(static_cast<size_t>(pos + 1));
          for (int64_t p = 0; p <= pos; ++p) {
            const float* k_nope = kvb.data() + (p * heads + hd) * (nope + vd);
            const float* k_pe = cache.At(*s.kv, layer, p) + kvl;
            scores[p] = (Dot(qh, k_nope, nope) + Dot(qh + nope, k_pe, rope_dim)) * scale;
          }
          Softmax(scores.data(), pos + 1);
          float* oh = o.data() + ((t0 + i) * heads + hd) * vd;
          std::fill(oh, oh + vd, 0.0f);
          for (int64_t p = 0; p <= pos; ++p) {
            Axpy(scores[p], kvb.data() + (p * heads + hd) * (nope + vd) + nope, vd, oh);
          }
        }
      }
    } else {
      // Absorbed: q_nope · W_UK puts the query in latent space; the output leaves it via W_UV.
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t i = 0; i < len; ++i) {
        for (int64_t hd = 0; hd < heads; ++hd) {
          const int64_t pos = s.start_pos + i;
          const float* qh = q.data() + ((t0 + i) * heads + hd) * qk;
          const float* w_uk = w.kv_b_f32.data() + hd * (nope + vd) * kvl;  // [nope, kv_lora]
          const float* w_uv = w_uk + nope * kvl;                             // [v_head, kv_lora]
          std::vector<float> q_latent(static_cast<size_t>(kvl), 0.0f);
          for (int64_t n = 0; n < nope; ++n) Axpy(qh[n], w_uk + n * kvl, kvl, q_latent.data());
          std::vector<float> scores(static_cast<size_t>(pos + 1));
          for (int64_t p = 0; p <= pos; ++p) {
            const float* cached = cache.At(*s.kv, layer, p);
            scores[p] = (Dot(q_latent.data(), cached, kvl) + Dot(qh + nope, cached + kvl, rope_dim)) *
                        scale;
          }
          Softmax(scores.data(), pos + 1);
          std::vector<float> o_latent(static_cast<size_t>(kvl), 0.0f);
          for (int64_t p = 0; p <= pos; ++p) {
            Axpy(scores[p], cache.At(*s.kv, layer, p), kvl, o_latent.data());
          }
          float* oh = o.data() + ((t0 + i) * heads + hd) * vd;
          for (int64_t v = 0; v < vd; ++v) oh[v] = Dot(w_uv + v * kvl, o_latent.data(), kvl);
        }
      }
    }
    t0 += len;
  }
  MatMul(o.data(), T, w.o_proj, out);
}

}  // namespace epinfer
