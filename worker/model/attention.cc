#include "worker/model/attention.h"

#include <algorithm>
#include <cmath>

#include "worker/kernels/linear.h"
#include "worker/kernels/ops.h"

namespace epinfer {
namespace {

// Query rows per block of the naive form's score matrix: the causal mask wastes at most one
// block's upper triangle.
constexpr int64_t kQueryBlock = 64;
// Heads per absorbed-attention task: the rows of its score and output products, which read the
// token's cached latents once for all of them.
constexpr int64_t kHeadGroup = 8;

struct Dims {
  int64_t heads, nope, rope, qk, vd, kvl, kvd;
  float scale;
};

// Naive form for one sequence's `len` new tokens (queries q [len, heads, qk]): expand every
// cached latent into per-head k_nope and v with kv_b_proj, then per head
// softmax(scale · q·kᵀ, causal) · v as two sgemm per block of queries. o: [len, heads, vd].
void NaiveAttention(const Dims& d, const LayerWeights& w, int64_t layer, const SequenceStep& s,
                    const float* q, KvCache& cache, float* o) {
  const int64_t len = static_cast<int64_t>(s.tokens.size());
  const int64_t total = s.start_pos + len;  // keys: positions [0, total)
  const int64_t kv_row = d.nope + d.vd;
  std::vector<float> latent(static_cast<size_t>(total * d.kvl));
  std::vector<float> k_pe(static_cast<size_t>(total * d.rope));
  for (int64_t p = 0; p < total; ++p) {
    const float* cached = cache.At(*s.kv, layer, p);
    std::copy(cached, cached + d.kvl, latent.data() + p * d.kvl);
    std::copy(cached + d.kvl, cached + d.kvd, k_pe.data() + p * d.rope);
  }
  std::vector<float> kvb(static_cast<size_t>(total * d.heads * kv_row));  // [total, heads, nope | v]
  MatMul(latent.data(), total, w.kv_b_proj, kvb.data());
#pragma omp parallel
  {
    std::vector<float> keys(static_cast<size_t>(total * d.qk));  // this head's [k_nope | k_pe]
    std::vector<float> scores(static_cast<size_t>(kQueryBlock * total));
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < d.heads; ++h) {
      for (int64_t p = 0; p < total; ++p) {
        const float* k_nope = kvb.data() + (p * d.heads + h) * kv_row;
        std::copy(k_nope, k_nope + d.nope, keys.data() + p * d.qk);
        std::copy(k_pe.data() + p * d.rope, k_pe.data() + (p + 1) * d.rope,
                  keys.data() + p * d.qk + d.nope);
      }
      for (int64_t i0 = 0; i0 < len; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, len - i0);
        const int64_t visible = s.start_pos + i0 + rows;  // keys the block's last query sees
        GemmF32(rows, visible, d.qk, d.scale, q + (i0 * d.heads + h) * d.qk, d.heads * d.qk,
                keys.data(), d.qk, /*b_transposed=*/true, scores.data(), visible);
        for (int64_t i = 0; i < rows; ++i) {
          float* row = scores.data() + i * visible;
          const int64_t seen = s.start_pos + i0 + i + 1;
          Softmax(row, seen);
          std::fill(row + seen, row + visible, 0.0f);
        }
        GemmF32(rows, d.vd, visible, 1.0f, scores.data(), visible, kvb.data() + h * kv_row + d.nope,
                d.heads * kv_row, /*b_transposed=*/false, o + (i0 * d.heads + h) * d.vd,
                d.heads * d.vd);
      }
    }
  }
}

// One new token attended in absorbed form.
struct AbsorbedToken {
  int64_t row;  // index into the step's tokens
  int64_t position;
  const KvBlockTable* kv;
};

// Absorbed form (DeepSeek-V3 model.py, attn_impl "absorb") for tokens of any sequences: per head
// h, q_latent = q_nope · W_UK[h] puts the query in latent space; scores against the cached latent
// and rope key; the output leaves latent space through W_UV[h]. Both per-head products run as one
// MatMulBatch over all heads (W_UK[h] through its transposed copy), reading each weight once per
// step in its stored dtype. q: [T, heads, qk]; o: [T, heads, vd].
void AbsorbedAttention(const Dims& d, const LayerWeights& w, int64_t layer,
                       const std::vector<AbsorbedToken>& tokens, const float* q, KvCache& cache,
                       float* o) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t kv_row = d.nope + d.vd;
  // Per head, its tokens' rows: q_nope [heads, n, nope] → q_latent [heads, n, kvl];
  // o_latent [heads, n, kvl] → o_head [heads, n, vd].
  std::vector<float> q_nope(static_cast<size_t>(d.heads * n * d.nope));
  std::vector<float> q_latent(static_cast<size_t>(d.heads * n * d.kvl));
  std::vector<float> o_latent(q_latent.size());
  std::vector<float> o_head(static_cast<size_t>(d.heads * n * d.vd));
  for (int64_t h = 0; h < d.heads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      const float* qh = q + (tokens[i].row * d.heads + h) * d.qk;
      std::copy(qh, qh + d.nope, q_nope.data() + (h * n + i) * d.nope);
    }
  }
  std::vector<LinearWeight> uv(static_cast<size_t>(d.heads));
  std::vector<MatMulJob> jobs(static_cast<size_t>(d.heads));
  if (!w.kv_b_uk_t.empty()) {
    for (int64_t h = 0; h < d.heads; ++h) {
      jobs[h] = {q_nope.data() + h * n * d.nope, n, &w.kv_b_uk_t[h],
                 q_latent.data() + h * n * d.kvl};
    }
    MatMulBatch(jobs);
  } else {
#pragma omp parallel for schedule(static) if (ParallelWorthwhile(d.heads * n * d.nope * d.kvl))
    for (int64_t h = 0; h < d.heads; ++h) {
      MatMulTransposed(q_nope.data() + h * n * d.nope, n,
                       w.kv_b_proj.Rows(h * kv_row, h * kv_row + d.nope),
                       q_latent.data() + h * n * d.kvl);
    }
  }
  // Per token and head: [q_latent | q_pe], matching the cache's [latent | k_pe].
  std::vector<float> q_cat(static_cast<size_t>(n * d.heads * d.kvd));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < d.heads; ++h) {
      float* qc = q_cat.data() + (i * d.heads + h) * d.kvd;
      const float* ql = q_latent.data() + (h * n + i) * d.kvl;
      std::copy(ql, ql + d.kvl, qc);
      const float* q_pe = q + (tokens[i].row * d.heads + h) * d.qk + d.nope;
      std::copy(q_pe, q_pe + d.rope, qc + d.kvl);
    }
  }
  // Scores and the latent output for a group of heads of one token: two sgemm over the token's
  // cached positions, gathered once per task.
  const int64_t groups = (d.heads + kHeadGroup - 1) / kHeadGroup;
  int64_t max_keys = 0;
  for (const AbsorbedToken& t : tokens) max_keys = std::max(max_keys, t.position + 1);
#pragma omp parallel if (ParallelWorthwhile(n * d.heads * max_keys * d.kvd))
  {
    // Per-thread buffers kept across calls: fresh ones would be mapped and zeroed every layer.
    thread_local std::vector<float> context, scores;  // [keys, latent | k_pe]; [group, keys]
    context.resize(std::max(context.size(), static_cast<size_t>(max_keys * d.kvd)));
    scores.resize(std::max(scores.size(), static_cast<size_t>(kHeadGroup * max_keys)));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n * groups; ++task) {
      const int64_t i = task / groups, h0 = task % groups * kHeadGroup;
      const int64_t group = std::min(kHeadGroup, d.heads - h0);
      const AbsorbedToken& t = tokens[i];
      const int64_t keys = t.position + 1;
      for (int64_t p = 0; p < keys; ++p) {
        const float* cached = cache.At(*t.kv, layer, p);
        std::copy(cached, cached + d.kvd, context.data() + p * d.kvd);
      }
      GemmF32(group, keys, d.kvd, d.scale, q_cat.data() + (i * d.heads + h0) * d.kvd, d.kvd,
              context.data(), d.kvd, /*b_transposed=*/true, scores.data(), keys);
      for (int64_t g = 0; g < group; ++g) Softmax(scores.data() + g * keys, keys);
      // Head h0 + g's row of token i: o_latent[h0 + g, i], n rows apart.
      GemmF32(group, d.kvl, keys, 1.0f, scores.data(), keys, context.data(), d.kvd,
              /*b_transposed=*/false, o_latent.data() + (h0 * n + i) * d.kvl, n * d.kvl);
    }
  }
  for (int64_t h = 0; h < d.heads; ++h) {
    uv[h] = w.kv_b_proj.Rows(h * kv_row + d.nope, (h + 1) * kv_row);
    jobs[h] = {o_latent.data() + h * n * d.kvl, n, &uv[h], o_head.data() + h * n * d.vd};
  }
  MatMulBatch(jobs);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < d.heads; ++h) {
      const float* oh = o_head.data() + (h * n + i) * d.vd;
      std::copy(oh, oh + d.vd, o + (tokens[i].row * d.heads + h) * d.vd);
    }
  }
}

}  // namespace

// Multi-head latent attention (model.py MLA.forward) for every new token of the batch.
void MlaAttention(const ModelConfig& c, const LayerWeights& w, const Rope& rope, int64_t layer,
                  const float* h, absl::Span<const SequenceStep> batch,
                  const std::vector<int64_t>& positions, KvCache& cache, AttentionForm form,
                  float* out) {
  const int64_t T = static_cast<int64_t>(positions.size());
  const Dims d{c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.qk_head_dim(),
               c.v_head_dim, c.kv_lora_rank, c.kv_cache_dim(),
               static_cast<float>(c.SoftmaxScale())};
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Queries: [T, heads, qk_nope | qk_rope].
  // Latent [kv_lora | k_pe] per token, computed beside the query's first projection.
  std::vector<float> q(static_cast<size_t>(T * d.heads * d.qk));
  std::vector<float> kv(static_cast<size_t>(T * d.kvd));
  if (c.q_lora_rank > 0) {
    std::vector<float> qa(static_cast<size_t>(T * c.q_lora_rank));
    const MatMulJob first[] = {{h, T, &w.q_a_proj, qa.data()},
                               {h, T, &w.kv_a_proj_with_mqa, kv.data()}};
    MatMulBatch(first);
    RmsNorm(qa.data(), T, c.q_lora_rank, w.q_a_layernorm.data(), eps, qa.data());
    MatMul(qa.data(), T, w.q_b_proj, q.data());
  } else {
    const MatMulJob first[] = {{h, T, &w.q_proj, q.data()},
                               {h, T, &w.kv_a_proj_with_mqa, kv.data()}};
    MatMulBatch(first);
  }
  // Normalise the latent, rotate the rope parts, cache both.
  std::vector<float> cos_sin(static_cast<size_t>(d.rope));
  std::vector<AbsorbedToken> absorbed;
  {
    int64_t t = 0;
    for (const SequenceStep& s : batch) {
      const int64_t len = static_cast<int64_t>(s.tokens.size());
      const bool absorb =
          form == AttentionForm::kAbsorbed || (form == AttentionForm::kAuto && len == 1);
      for (int64_t i = 0; i < len; ++i, ++t) {
        float* kv_t = kv.data() + t * d.kvd;
        RmsNorm(kv_t, 1, d.kvl, w.kv_a_layernorm.data(), eps, kv_t);
        rope.Angles(positions[t], cos_sin.data());
        rope.Apply(cos_sin.data(), kv_t + d.kvl, 1, d.rope);
        rope.Apply(cos_sin.data(), q.data() + t * d.heads * d.qk + d.nope, d.heads, d.qk);
        std::copy(kv_t, kv_t + d.kvd, cache.At(*s.kv, layer, positions[t]));
        if (absorb) absorbed.push_back({t, positions[t], s.kv});
      }
    }
  }

  std::vector<float> o(static_cast<size_t>(T * d.heads * d.vd));
  int64_t t0 = 0;
  for (const SequenceStep& s : batch) {
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    const bool absorb =
        form == AttentionForm::kAbsorbed || (form == AttentionForm::kAuto && len == 1);
    if (!absorb && len > 0) {
      NaiveAttention(d, w, layer, s, q.data() + t0 * d.heads * d.qk, cache,
                     o.data() + t0 * d.heads * d.vd);
    }
    t0 += len;
  }
  if (!absorbed.empty()) AbsorbedAttention(d, w, layer, absorbed, q.data(), cache, o.data());
  MatMul(o.data(), T, w.o_proj, out);
}

}  // namespace epinfer
