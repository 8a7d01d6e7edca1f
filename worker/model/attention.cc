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

// Where the absorbed form's queries come from: the step's finished queries q [T, heads, qk]
// (rotated), or, for decode, the normalised q_a output qa [T, q_lora_rank] with the step's
// rotation angles cos_sin [T, rope], so that each head group computes its own heads' rows of
// q_b_proj inside its task.
struct AbsorbedQueries {
  const float* q = nullptr;
  const float* qa = nullptr;
  int64_t q_lora = 0;
  const float* cos_sin = nullptr;
};

// Absorbed form (DeepSeek-V3 model.py, attn_impl "absorb") for tokens of any sequences: per head
// h, q_latent = q_nope · W_UK[h] puts the query in latent space; scores against the cached latent
// and rope key; the output leaves latent space through W_UV[h]. Every step of it is per head, so
// it runs as one parallel loop over groups of heads with no barrier inside: a task computes its
// heads' queries (q_b_proj rows, rotation), their latent queries (W_UK[h] through its transposed
// copy), scores and latent outputs for each token over the token's cache blocks where they lie
// (AttendRows), and its heads' outputs through W_UV[h]. Weights are read in their stored dtype,
// once per step. o: [T, heads, vd].
void AbsorbedAttention(const Dims& d, const LayerWeights& w, const Rope& rope, int64_t layer,
                       const std::vector<AbsorbedToken>& tokens, const AbsorbedQueries& queries,
                       KvCache& cache, float* o) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t kv_row = d.nope + d.vd;
  int64_t max_keys = 0;
  for (const AbsorbedToken& t : tokens) max_keys = std::max(max_keys, t.position + 1);
  // One group per thread, of at most kHeadGroup heads: every group reads all of its tokens'
  // cached rows (AttendRows loads them once for the group's heads), so more groups read them
  // more often. Two groups per thread, which evened out the threads' pace, made the region 4-9%
  // slower at batch 1 even where the second reading came from L2 (FP8 81 -> 76 us, BF16 114 ->
  // 108 us a layer; at a 1000-token context, 8 sequences, 293-368 -> 344-408 tok/s).
  const int64_t group = std::clamp<int64_t>(d.heads / KernelThreads(), 1, kHeadGroup);
  const int64_t groups = (d.heads + group - 1) / group;
  const bool parallel = ParallelWorthwhile(
      n * d.heads * (d.qk * queries.q_lora + kv_row * d.kvl + 2 * max_keys * d.kvd));
  // The normalised q_a rows of the absorbed tokens, where the tasks compute the queries.
  std::vector<float> qa;
  if (queries.qa != nullptr) {
    qa.resize(static_cast<size_t>(n * queries.q_lora));
    for (int64_t i = 0; i < n; ++i) {
      const float* from = queries.qa + tokens[i].row * queries.q_lora;
      std::copy(from, from + queries.q_lora, qa.data() + i * queries.q_lora);
    }
  }
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t h0 = g * group, heads = std::min(group, d.heads - h0);
    // Per-thread buffers kept across calls: fresh ones would be mapped and zeroed every layer.
    thread_local std::vector<float> q, x, y, q_cat, o_latent, scores;
    thread_local std::vector<RowRun> runs;
    auto sized = [](std::vector<float>& v, int64_t size) {
      if (v.size() < static_cast<size_t>(size)) v.resize(static_cast<size_t>(size));
      return v.data();
    };
    // This group's queries [n, heads, qk].
    float* qg = sized(q, n * heads * d.qk);
    if (queries.qa != nullptr) {
      MatMul(qa.data(), n, w.q_b_proj.Rows(h0 * d.qk, (h0 + heads) * d.qk), qg);
      for (int64_t i = 0; i < n; ++i) {
        rope.Apply(queries.cos_sin + tokens[i].row * d.rope, qg + i * heads * d.qk + d.nope, heads,
                   d.qk);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const float* from = queries.q + (tokens[i].row * d.heads + h0) * d.qk;
        std::copy(from, from + heads * d.qk, qg + i * heads * d.qk);
      }
    }
    // [q_latent | q_pe] per token and head [n, heads, kvd], matching the cache's [latent | k_pe].
    float* qc = sized(q_cat, n * heads * d.kvd);
    float* xs = sized(x, n * d.nope);
    float* ys = sized(y, n * std::max(d.kvl, d.vd));
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const float* qh = qg + (i * heads + h) * d.qk;
        std::copy(qh, qh + d.nope, xs + i * d.nope);
        std::copy(qh + d.nope, qh + d.qk, qc + (i * heads + h) * d.kvd + d.kvl);
      }
      if (!w.kv_b_uk_t.empty()) {
        MatMul(xs, n, w.kv_b_uk_t[h0 + h], ys);
      } else {
        MatMulTransposed(xs, n, w.kv_b_proj.Rows((h0 + h) * kv_row, (h0 + h) * kv_row + d.nope),
                         ys);
      }
      for (int64_t i = 0; i < n; ++i) {
        std::copy(ys + i * d.kvl, ys + (i + 1) * d.kvl, qc + (i * heads + h) * d.kvd);
      }
    }
    // Per token: scores and the latent output of the group's heads over the token's cached
    // positions, read in place block by block. o_latent [heads, n, kvl].
    float* probs = sized(scores, heads * max_keys);
    float* ol = sized(o_latent, heads * n * d.kvl);
    for (int64_t i = 0; i < n; ++i) {
      const AbsorbedToken& t = tokens[i];
      const int64_t keys = t.position + 1, block = cache.block_size_tokens();
      runs.clear();
      for (int64_t p = 0; p < keys; p += block) {
        runs.push_back({cache.At(*t.kv, layer, p), std::min(block, keys - p)});
      }
      AttendRows(qc + i * heads * d.kvd, heads, d.kvd, runs, d.scale, d.kvl, probs,
                 ol + i * d.kvl, n * d.kvl);
    }
    // Out of latent space, head by head.
    for (int64_t h = 0; h < heads; ++h) {
      MatMul(ol + h * n * d.kvl, n, w.kv_b_uv[h0 + h], ys);
      for (int64_t i = 0; i < n; ++i) {
        std::copy(ys + i * d.vd, ys + (i + 1) * d.vd, o + (tokens[i].row * d.heads + h0 + h) * d.vd);
      }
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
  // A step of decode tokens only (all absorbed) leaves q_b_proj to the absorbed form's head
  // groups, which compute their own heads' queries.
  auto absorbs = [form](const SequenceStep& s) {
    return form == AttentionForm::kAbsorbed ||
           (form == AttentionForm::kAuto && s.tokens.size() == 1);
  };
  bool all_absorbed = true;
  for (const SequenceStep& s : batch) {
    all_absorbed = all_absorbed && (absorbs(s) || s.tokens.empty());
  }
  const bool queries_in_heads = c.q_lora_rank > 0 && all_absorbed;
  std::vector<float> q(queries_in_heads ? 0 : static_cast<size_t>(T * d.heads * d.qk));
  std::vector<float> kv(static_cast<size_t>(T * d.kvd));
  std::vector<float> qa;
  if (c.q_lora_rank > 0) {
    qa.resize(static_cast<size_t>(T * c.q_lora_rank));
    const MatMulJob first[] = {{h, T, &w.q_a_proj, qa.data()},
                               {h, T, &w.kv_a_proj_with_mqa, kv.data()}};
    MatMulBatch(first);
    RmsNorm(qa.data(), T, c.q_lora_rank, w.q_a_layernorm.data(), eps, qa.data());
    if (!queries_in_heads) MatMul(qa.data(), T, w.q_b_proj, q.data());
  } else {
    const MatMulJob first[] = {{h, T, &w.q_proj, q.data()},
                               {h, T, &w.kv_a_proj_with_mqa, kv.data()}};
    MatMulBatch(first);
  }
  // Normalise the latent, rotate the rope parts, cache both.
  std::vector<float> cos_sin(static_cast<size_t>(T * d.rope));
  std::vector<AbsorbedToken> absorbed;
  {
    int64_t t = 0;
    for (const SequenceStep& s : batch) {
      const int64_t len = static_cast<int64_t>(s.tokens.size());
      const bool absorb = absorbs(s);
      for (int64_t i = 0; i < len; ++i, ++t) {
        float* kv_t = kv.data() + t * d.kvd;
        float* angles = cos_sin.data() + t * d.rope;
        RmsNorm(kv_t, 1, d.kvl, w.kv_a_layernorm.data(), eps, kv_t);
        rope.Angles(positions[t], angles);
        rope.Apply(angles, kv_t + d.kvl, 1, d.rope);
        if (!queries_in_heads) {
          rope.Apply(angles, q.data() + t * d.heads * d.qk + d.nope, d.heads, d.qk);
        }
        std::copy(kv_t, kv_t + d.kvd, cache.At(*s.kv, layer, positions[t]));
        if (absorb) absorbed.push_back({t, positions[t], s.kv});
      }
    }
  }

  std::vector<float> o(static_cast<size_t>(T * d.heads * d.vd));
  int64_t t0 = 0;
  for (const SequenceStep& s : batch) {
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    if (!absorbs(s) && len > 0) {
      NaiveAttention(d, w, layer, s, q.data() + t0 * d.heads * d.qk, cache,
                     o.data() + t0 * d.heads * d.vd);
    }
    t0 += len;
  }
  if (!absorbed.empty()) {
    const AbsorbedQueries queries =
        queries_in_heads ? AbsorbedQueries{nullptr, qa.data(), c.q_lora_rank, cos_sin.data()}
                         : AbsorbedQueries{q.data()};
    AbsorbedAttention(d, w, rope, layer, absorbed, queries, cache, o.data());
  }
  MatMul(o.data(), T, w.o_proj, out);
}

}  // namespace epinfer
