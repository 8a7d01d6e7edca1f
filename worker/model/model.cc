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
    MlaAttention(c, w, *rope_, l, hn.data(), batch, positions, cache, options.attention,
                 delta.data());
    Axpy(1.0f, delta.data(), T * hidden, x.data());
    // x = x + ffn(ffn_norm(x)): a dense MLP, or the MoE (a collective of the EP group).
    RmsNorm(x.data(), T, hidden, w.post_attention_layernorm.data(), eps, hn.data());
    if (c.is_moe_layer(l)) {
      RETURN_IF_ERROR(RunMoe(c, w, placement_.layers[l], hn.data(), T, comm,
                             absl::Now() + options.collective_timeout, options.moe_transport,
                             delta.data(),
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
