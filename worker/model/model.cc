#include "worker/model/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/kernels/linear.h"
#include "worker/kernels/ops.h"

namespace epinfer {

absl::StatusOr<std::unique_ptr<DeepseekV3Model>> DeepseekV3Model::Load(const std::string& dir,
                                                                       const LoadOptions& options) {
  auto model = std::make_unique<DeepseekV3Model>(PrivateTag{});
  ASSIGN_OR_RETURN(model->config_,
                   LoadModelConfig((std::filesystem::path(dir) / "config.json").string()));
  const ModelConfig& c = model->config_;
  ASSIGN_OR_RETURN(model->checkpoint_, Checkpoint::Open(dir));
  model->rank_ = options.rank;
  if (options.placement.layers.empty()) {
    std::vector<bool> moe(static_cast<size_t>(c.num_hidden_layers));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) moe[l] = c.is_moe_layer(l);
    ASSIGN_OR_RETURN(model->placement_,
                     ExpertPlacement::Contiguous(c.num_hidden_layers, moe,
                                                 static_cast<int32_t>(c.n_routed_experts), 1));
  } else {
    model->placement_ = options.placement;
    if (model->placement_.layers.size() != static_cast<size_t>(c.num_hidden_layers)) {
      return absl::InvalidArgumentError(absl::StrCat("placement has ",
                                                     model->placement_.layers.size(),
                                                     " layers, the model ", c.num_hidden_layers));
    }
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      if (!c.is_moe_layer(l)) continue;
      LayerPlacement& p = model->placement_.layers[l];
      RETURN_IF_ERROR(p.Index(static_cast<int32_t>(c.n_routed_experts)));
      if (options.rank < 0 || options.rank >= p.num_ranks) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", options.rank, " outside the ",
                                                       p.num_ranks, "-rank placement"));
      }
    }
  }
  ASSIGN_OR_RETURN(model->weights_,
                   LoadWeights(*model->checkpoint_, c, model->placement_, options.rank));
  model->rope_ = std::make_unique<Rope>(c);
  return model;
}

absl::StatusOr<KvCache> DeepseekV3Model::MakeKvCache(int64_t budget_bytes,
                                                     int64_t block_size_tokens) const {
  const int64_t blocks = KvCache::BlocksForBudget(budget_bytes, config_.num_hidden_layers,
                                                  config_.kv_cache_dim(), block_size_tokens);
  if (blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache budget of ", budget_bytes,
                                                   " bytes holds no block of ", block_size_tokens,
                                                   " tokens"));
  }
  return KvCache::Create({config_.num_hidden_layers, config_.kv_cache_dim(), block_size_tokens,
                          blocks});
}

// Multi-head latent attention (model.py MLA.forward) for every new token of the batch.
void DeepseekV3Model::Attention(int64_t layer, const float* h, absl::Span<const SequenceStep> batch,
                                const std::vector<int64_t>& positions, KvCache& cache,
                                AttentionForm form, float* out) const {
  const ModelConfig& c = config_;
  const LayerWeights& w = weights_.layers[layer];
  const int64_t T = static_cast<int64_t>(positions.size());
  const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim,
                rope = c.qk_rope_head_dim, qk = c.qk_head_dim(), vd = c.v_head_dim,
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
  std::vector<float> cos_sin(static_cast<size_t>(rope));
  {
    int64_t t = 0;
    for (const SequenceStep& s : batch) {
      for (size_t i = 0; i < s.tokens.size(); ++i, ++t) {
        float* kv_t = kv.data() + t * kvd;
        RmsNorm(kv_t, 1, kvl, w.kv_a_layernorm.data(), eps, kv_t);
        rope_->Angles(positions[t], cos_sin.data());
        rope_->Apply(cos_sin.data(), kv_t + kvl, 1, rope);
        rope_->Apply(cos_sin.data(), q.data() + t * heads * qk + nope, heads, qk);
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
            scores[p] = (Dot(qh, k_nope, nope) + Dot(qh + nope, k_pe, rope)) * scale;
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
            scores[p] = (Dot(q_latent.data(), cached, kvl) + Dot(qh + nope, cached + kvl, rope)) *
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

absl::Status DeepseekV3Model::Forward(absl::Span<const SequenceStep> batch, KvCache& cache,
                                      Communicator& comm, const ForwardOptions& options,
                                      std::vector<float>* logits, ForwardStats* stats) const {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Validate the whole step before touching the cache.
  std::vector<int64_t> positions;
  std::vector<int32_t> tokens;
  for (size_t s = 0; s < batch.size(); ++s) {
    const SequenceStep& step = batch[s];
    if (step.kv == nullptr) return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": no KV"));
    if (step.start_pos != step.kv->num_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": start_pos ", step.start_pos,
                                                     " but ", step.kv->num_tokens, " tokens cached"));
    }
    const int64_t end = step.start_pos + static_cast<int64_t>(step.tokens.size());
    if (end > c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": ", end,
                                                     " positions exceed max_position_embeddings ",
                                                     c.max_position_embeddings));
    }
    if (cache.BlocksFor(end) > static_cast<int64_t>(step.kv->blocks.size())) {
      return absl::FailedPreconditionError(absl::StrCat("sequence ", s, ": KV blocks for ", end,
                                                        " tokens not reserved"));
    }
    for (size_t i = 0; i < step.tokens.size(); ++i) {
      if (step.tokens[i] < 0 || step.tokens[i] >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": token ", step.tokens[i],
                                                       " outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      }
      tokens.push_back(step.tokens[i]);
      positions.push_back(step.start_pos + static_cast<int64_t>(i));
    }
  }
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (stats != nullptr) stats->moe.assign(static_cast<size_t>(c.num_hidden_layers), {});

  // Embedding.
  std::vector<float> x(static_cast<size_t>(T * hidden));
  for (int64_t t = 0; t < T; ++t) {
    DequantizeRows(weights_.embed_tokens, tokens[t], tokens[t] + 1, x.data() + t * hidden);
  }

  std::vector<float> hn(x.size()), delta(x.size());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // x = x + attn(attn_norm(x))
    RmsNorm(x.data(), T, hidden, w.input_layernorm.data(), eps, hn.data());
    Attention(l, hn.data(), batch, positions, cache, options.attention, delta.data());
    Axpy(1.0f, delta.data(), T * hidden, x.data());
    // x = x + ffn(ffn_norm(x)): a dense MLP, or the MoE (a collective of the EP group).
    RmsNorm(x.data(), T, hidden, w.post_attention_layernorm.data(), eps, hn.data());
    if (c.is_moe_layer(l)) {
      RETURN_IF_ERROR(RunMoe(c, w, placement_.layers[l], hn.data(), T, comm,
                             absl::Now() + options.collective_timeout, delta.data(),
                             stats != nullptr ? &stats->moe[l] : nullptr));
    } else {
      RunMlp(w.mlp, hn.data(), T, delta.data());
    }
    Axpy(1.0f, delta.data(), T * hidden, x.data());
  }
  for (const SequenceStep& s : batch) s.kv->num_tokens += static_cast<int64_t>(s.tokens.size());

  // Final norm and LM head on the rows that need logits.
  std::vector<float> rows;
  int64_t t0 = 0;
  for (const SequenceStep& s : batch) {
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    const int64_t first = s.all_logits ? 0 : len - 1;
    for (int64_t i = std::max<int64_t>(first, 0); i < len; ++i) {
      rows.insert(rows.end(), x.begin() + (t0 + i) * hidden, x.begin() + (t0 + i + 1) * hidden);
    }
    t0 += len;
  }
  const int64_t n = static_cast<int64_t>(rows.size()) / hidden;
  RmsNorm(rows.data(), n, hidden, weights_.norm.data(), eps, rows.data());
  logits->resize(static_cast<size_t>(n * c.vocab_size));
  MatMul(rows.data(), n, weights_.lm_head, logits->data());
  return absl::OkStatus();
}

}  // namespace epinfer
