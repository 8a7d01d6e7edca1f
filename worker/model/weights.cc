#include "worker/model/weights.h"

#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace epinfer {

std::string LayerTensorName(int64_t layer, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

namespace {

class WeightReader {
 public:
  WeightReader(const Checkpoint& checkpoint, ModelWeights& weights)
      : checkpoint_(checkpoint), weights_(weights) {}

  // A [rows, cols] linear weight "<name>" (".weight" appended), F8 with "<name>_scale_inv".
  // BF16 and FP8 weights of products (not the embedding, whose rows are looked up) are also
  // packed into panels for the AVX-512 panel kernels (PackPanels).
  absl::StatusOr<LinearWeight> Linear(const std::string& name, int64_t rows, int64_t cols,
                                      bool product = true) {
    const std::string weight_name = name + ".weight";
    ASSIGN_OR_RETURN(Checkpoint::Tensor t,
                     checkpoint_.Get(weight_name, {rows, cols},
                                     {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}));
    LinearWeight w;
    w.rows = rows;
    w.cols = cols;
    w.dtype = t.info->dtype;
    w.data = Aligned(t, DTypeSize(w.dtype));
    if (w.dtype == DType::kF16) {
      // No F16 SIMD path: convert once to F32.
      std::vector<uint8_t>& f32 = weights_.owned.emplace_back(rows * cols * sizeof(float));
      DequantizeRows(w, 0, rows, reinterpret_cast<float*>(f32.data()));
      w.dtype = DType::kF32;
      w.data = f32.data();
    }
    if (w.dtype == DType::kF8E4M3) {
      const int64_t sr = (rows + kFp8BlockSize - 1) / kFp8BlockSize;
      const int64_t sc = (cols + kFp8BlockSize - 1) / kFp8BlockSize;
      ASSIGN_OR_RETURN(Checkpoint::Tensor s,
                       checkpoint_.Get(weight_name + "_scale_inv", {sr, sc}, {DType::kF32}));
      w.scale_inv = static_cast<const float*>(Aligned(s, 4));
    }
    if (product) Pack({&w, 1});
    return w;
  }

  // Row groups [g · stride, g · stride + rows) of w transposed, one weight [w.cols, rows] per
  // group (absorbed MLA's W_UK[h]ᵀ), in w's dtype, their panels packed one after another. Empty
  // for FP8 where a group straddles a scale block: the copy's scales must depend on its rows only.
  std::vector<LinearWeight> TransposedGroups(const LinearWeight& w, int64_t groups, int64_t stride,
                                             int64_t rows) {
    std::vector<LinearWeight> out;
    const bool fp8 = w.dtype == DType::kF8E4M3;
    for (int64_t g = 0; g < groups && fp8; ++g) {
      const int64_t first = w.first_row + g * stride;
      if (first / kFp8BlockSize != (first + rows - 1) / kFp8BlockSize) return out;
    }
    const int64_t size = DTypeSize(w.dtype);
    const int64_t scale_rows = (w.cols + kFp8BlockSize - 1) / kFp8BlockSize;
    for (int64_t g = 0; g < groups; ++g) {
      std::vector<uint8_t>& bytes = weights_.owned.emplace_back(w.cols * rows * size);
      const auto* src = static_cast<const uint8_t*>(w.data);
      for (int64_t c = 0; c < w.cols; ++c) {
        for (int64_t r = 0; r < rows; ++r) {
          std::memcpy(bytes.data() + (c * rows + r) * size,
                      src + ((g * stride + r) * w.cols + c) * size, size);
        }
      }
      LinearWeight t;
      t.dtype = w.dtype;
      t.rows = w.cols;
      t.cols = rows;
      t.data = bytes.data();
      if (fp8) {
        // Row block b of the copy is column block b of the group's one row block.
        std::vector<uint8_t>& scales = weights_.owned.emplace_back(scale_rows * sizeof(float));
        const float* from = w.scale_inv + ((w.first_row + g * stride) / kFp8BlockSize) *
                                              w.scale_cols();
        std::memcpy(scales.data(), from, scale_rows * sizeof(float));
        t.scale_inv = reinterpret_cast<const float*>(scales.data());
      }
      out.push_back(t);
    }
    Pack(out);
    return out;
  }

  // Row groups [g · stride + offset, g · stride + offset + rows) of w as views (absorbed MLA's
  // W_UV[h]), their panels packed again one after another: w's own panels interleave them with
  // the W_UK rows, which decode does not read.
  std::vector<LinearWeight> RowGroups(const LinearWeight& w, int64_t groups, int64_t stride,
                                      int64_t offset, int64_t rows) {
    std::vector<LinearWeight> out;
    for (int64_t g = 0; g < groups; ++g) {
      out.push_back(w.Rows(g * stride + offset, g * stride + offset + rows));
      out.back().panels = nullptr;
      out.back().panel_fix_start = nullptr;
    }
    Pack(out);
    return out;
  }

  // Panel-packs the weights one after another (PackPanelsContiguous) into `packed`.
  void Pack(std::span<LinearWeight> ws) { PackPanelsContiguous(ws, &weights_.packed); }

  // A vector (norm weight, bias) of `size` values as f32.
  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t size) {
    ASSIGN_OR_RETURN(Checkpoint::Tensor t,
                     checkpoint_.Get(name, {size}, {DType::kF32, DType::kBF16, DType::kF16}));
    LinearWeight view{t.info->dtype, 1, size, Aligned(t, DTypeSize(t.info->dtype))};
    std::vector<float> out(static_cast<size_t>(size));
    DequantizeRows(view, 0, 1, out.data());
    return out;
  }

  absl::StatusOr<MlpWeights> Mlp(const std::string& prefix, int64_t hidden, int64_t inter) {
    MlpWeights m;
    ASSIGN_OR_RETURN(m.gate_proj, Linear(prefix + ".gate_proj", inter, hidden));
    ASSIGN_OR_RETURN(m.up_proj, Linear(prefix + ".up_proj", inter, hidden));
    ASSIGN_OR_RETURN(m.down_proj, Linear(prefix + ".down_proj", hidden, inter));
    return m;
  }

 private:
  // Kernels read elements with aligned loads; safetensors does not promise alignment, so a
  // misaligned tensor is copied.
  const void* Aligned(const Checkpoint::Tensor& t, int alignment) {
    if (reinterpret_cast<uintptr_t>(t.data) % alignment == 0) return t.data;
    const size_t bytes = t.info->end - t.info->begin;
    std::vector<uint8_t>& copy = weights_.owned.emplace_back(bytes);
    std::memcpy(copy.data(), t.data, bytes);
    return copy.data();
  }

  const Checkpoint& checkpoint_;
  ModelWeights& weights_;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const ModelConfig& c,
                                         const ExpertPlacement& placement, int32_t rank) {
  ModelWeights weights;
  WeightReader read(checkpoint, weights);
  const int64_t hidden = c.hidden_size, heads = c.num_attention_heads;
  ASSIGN_OR_RETURN(weights.embed_tokens,
                   read.Linear("model.embed_tokens", c.vocab_size, hidden, /*product=*/false));
  // Decode looks its rows up a token at a time, anywhere in the table: fault the pages of the
  // mapped checkpoint they lie on in now, not one fault per new token while serving (~15 us of a
  // batch-1 step here, and a long tail).
  {
    const LinearWeight& e = weights.embed_tokens;
    const auto* bytes = static_cast<const volatile uint8_t*>(e.data);
    const int64_t size = e.rows * e.cols * DTypeSize(e.dtype);  // its rows, not its scales
    uint8_t sink = 0;
    for (int64_t i = 0; i < size; i += 4096) sink ^= bytes[i];
    if (size > 0) sink ^= bytes[size - 1];
    static_cast<void>(sink);
  }
  weights.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& w = weights.layers[l];
    auto name = [l](const std::string& suffix) { return LayerTensorName(l, suffix); };
    ASSIGN_OR_RETURN(w.input_layernorm, read.Vector(name("input_layernorm.weight"), hidden));
    ASSIGN_OR_RETURN(w.post_attention_layernorm,
                     read.Vector(name("post_attention_layernorm.weight"), hidden));
    if (c.q_lora_rank > 0) {
      ASSIGN_OR_RETURN(w.q_a_proj, read.Linear(name("self_attn.q_a_proj"), c.q_lora_rank, hidden));
      ASSIGN_OR_RETURN(w.q_a_layernorm,
                       read.Vector(name("self_attn.q_a_layernorm.weight"), c.q_lora_rank));
      ASSIGN_OR_RETURN(w.q_b_proj, read.Linear(name("self_attn.q_b_proj"),
                                               heads * c.qk_head_dim(), c.q_lora_rank));
    } else {
      ASSIGN_OR_RETURN(w.q_proj,
                       read.Linear(name("self_attn.q_proj"), heads * c.qk_head_dim(), hidden));
    }
    ASSIGN_OR_RETURN(w.kv_a_proj_with_mqa,
                     read.Linear(name("self_attn.kv_a_proj_with_mqa"), c.kv_cache_dim(), hidden));
    ASSIGN_OR_RETURN(w.kv_a_layernorm,
                     read.Vector(name("self_attn.kv_a_layernorm.weight"), c.kv_lora_rank));
    ASSIGN_OR_RETURN(w.kv_b_proj,
                     read.Linear(name("self_attn.kv_b_proj"),
                                 heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank));
    const int64_t kv_row = c.qk_nope_head_dim + c.v_head_dim;
    w.kv_b_uk_t = read.TransposedGroups(w.kv_b_proj, heads, kv_row, c.qk_nope_head_dim);
    w.kv_b_uv = read.RowGroups(w.kv_b_proj, heads, kv_row, c.qk_nope_head_dim, c.v_head_dim);
    ASSIGN_OR_RETURN(w.o_proj,
                     read.Linear(name("self_attn.o_proj"), hidden, heads * c.v_head_dim));
    if (!c.is_moe_layer(l)) {
      ASSIGN_OR_RETURN(w.mlp, read.Mlp(name("mlp"), hidden, c.intermediate_size));
      continue;
    }
    ASSIGN_OR_RETURN(w.gate, read.Linear(name("mlp.gate"), c.n_routed_experts, hidden));
    if (c.topk_method == "noaux_tc") {
      ASSIGN_OR_RETURN(w.e_score_correction_bias,
                       read.Vector(name("mlp.gate.e_score_correction_bias"), c.n_routed_experts));
    }
    if (static_cast<size_t>(l) >= placement.layers.size() ||
        placement.layers[l].phy2log.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("placement has no entry for MoE layer ", l));
    }
    w.local_experts = placement.LocalExperts(l, rank);
    for (int32_t e : w.local_experts) {
      ASSIGN_OR_RETURN(MlpWeights expert,
                       read.Mlp(absl::StrCat(name("mlp.experts."), e), hidden,
                                c.moe_intermediate_size));
      w.experts.push_back(expert);
    }
    if (c.n_shared_experts > 0) {
      ASSIGN_OR_RETURN(w.shared_experts, read.Mlp(name("mlp.shared_experts"), hidden,
                                                  c.moe_intermediate_size * c.n_shared_experts));
      w.has_shared_experts = true;
    }
  }
  ASSIGN_OR_RETURN(weights.norm, read.Vector("model.norm.weight", hidden));
  if (c.tie_word_embeddings) {
    weights.lm_head = weights.embed_tokens;
  } else {
    ASSIGN_OR_RETURN(weights.lm_head, read.Linear("lm_head", c.vocab_size, hidden));
  }
  return weights;
}

}  // namespace epinfer
