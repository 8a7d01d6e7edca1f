#include "worker/model/make_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "worker/model/config.h"
#include "worker/model/safetensors.h"
#include "worker/model/weights.h"

namespace epinfer {
namespace {

using Json = nlohmann::ordered_json;

Json TinyConfig() {
  return {{"architectures", {"DeepseekV3ForCausalLM"}},
          {"model_type", "deepseek_v3"},
          {"vocab_size", 512},
          {"hidden_size", 256},
          {"intermediate_size", 384},
          {"moe_intermediate_size", 160},
          {"num_hidden_layers", 3},
          {"num_nextn_predict_layers", 0},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 4},
          {"n_shared_experts", 1},
          {"n_routed_experts", 16},
          {"num_experts_per_tok", 4},
          {"n_group", 4},
          {"topk_group", 2},
          {"topk_method", "noaux_tc"},
          {"scoring_func", "sigmoid"},
          {"norm_topk_prob", true},
          {"routed_scaling_factor", 2.5},
          {"first_k_dense_replace", 1},
          {"moe_layer_freq", 1},
          {"q_lora_rank", 96},
          {"kv_lora_rank", 64},
          {"qk_nope_head_dim", 32},
          {"qk_rope_head_dim", 16},
          {"v_head_dim", 32},
          {"max_position_embeddings", 2560},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000},
          {"rope_scaling",
           {{"type", "yarn"},
            {"factor", 40},
            {"original_max_position_embeddings", 64},
            {"beta_fast", 32},
            {"beta_slow", 1},
            {"mscale", 1.0},
            {"mscale_all_dim", 1.0}}},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", false},
          {"bos_token_id", 0},
          {"eos_token_id", 1},
          {"torch_dtype", "bfloat16"}};
}

Json SmallConfig() {
  Json c = TinyConfig();
  c["vocab_size"] = 8192;
  c["hidden_size"] = 1024;
  c["intermediate_size"] = 2816;
  c["moe_intermediate_size"] = 512;
  c["num_hidden_layers"] = 4;
  c["num_attention_heads"] = 16;
  c["num_key_value_heads"] = 16;
  c["n_shared_experts"] = 2;
  c["n_routed_experts"] = 64;
  c["num_experts_per_tok"] = 6;
  c["n_group"] = 8;
  c["topk_group"] = 4;
  c["q_lora_rank"] = 384;
  c["kv_lora_rank"] = 256;
  c["qk_nope_head_dim"] = 64;
  c["qk_rope_head_dim"] = 32;
  c["v_head_dim"] = 64;
  c["max_position_embeddings"] = 163840;
  c["rope_scaling"]["original_max_position_embeddings"] = 4096;
  return c;
}

// Normal samples from a seeded engine; one stream per tensor name, so adding a tensor does not
// change the others.
class Random {
 public:
  Random(uint64_t seed, const std::string& name)
      : engine_(seed ^ std::hash<std::string>{}(name) * 0x9e3779b97f4a7c15ull) {}
  float Normal(float stddev) { return normal_(engine_) * stddev; }
  float Uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(engine_() >> 40) * 0x1p-24f;
  }

 private:
  std::mt19937_64 engine_;
  std::normal_distribution<float> normal_{0.0f, 1.0f};
};

std::string Encode(const std::vector<float>& v, DType dtype) {
  std::string bytes(v.size() * static_cast<size_t>(DTypeSize(dtype)), '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&bytes[i * 4], &v[i], 4);
    } else {
      const uint16_t b = F32ToBf16(v[i]);
      std::memcpy(&bytes[i * 2], &b, 2);
    }
  }
  return bytes;
}

class Writer {
 public:
  Writer(const MakeModelOptions& options) : options_(options) {}

  // A linear weight [rows, cols] with std 1/sqrt(cols) × gain (unit-variance outputs).
  void Linear(const std::string& name, int64_t rows, int64_t cols, bool quantizable,
              float gain = 1.0f) {
    Random rng(options_.seed, name);
    std::vector<float> w(static_cast<size_t>(rows * cols));
    const float stddev = gain / std::sqrt(static_cast<float>(cols));
    for (float& v : w) v = rng.Normal(stddev);
    const std::string weight = name + ".weight";
    if (options_.dtype != DType::kF8E4M3 || !quantizable) {
      Add(weight, options_.dtype == DType::kF32 ? DType::kF32 : DType::kBF16, {rows, cols}, w);
      return;
    }
    // Per 128×128 block: scale = amax / 448 (E4M3's largest finite), q = round(w / scale).
    const int64_t sr = (rows + kFp8BlockSize - 1) / kFp8BlockSize;
    const int64_t sc = (cols + kFp8BlockSize - 1) / kFp8BlockSize;
    std::vector<float> scale(static_cast<size_t>(sr * sc), 1.0f);
    for (int64_t br = 0; br < sr; ++br) {
      for (int64_t bc = 0; bc < sc; ++bc) {
        float amax = 0;
        for (int64_t r = br * kFp8BlockSize; r < std::min(rows, (br + 1) * kFp8BlockSize); ++r) {
          for (int64_t c = bc * kFp8BlockSize; c < std::min(cols, (bc + 1) * kFp8BlockSize); ++c) {
            amax = std::max(amax, std::fabs(w[r * cols + c]));
          }
        }
        if (amax > 0) scale[br * sc + bc] = amax / 448.0f;
      }
    }
    std::string q(w.size(), '\0');
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        q[r * cols + c] = static_cast<char>(
            F32ToF8E4M3(w[r * cols + c] / scale[(r / kFp8BlockSize) * sc + c / kFp8BlockSize]));
      }
    }
    tensors_.push_back({weight, DType::kF8E4M3, {rows, cols}, std::move(q)});
    Add(weight + "_scale_inv", DType::kF32, {sr, sc}, scale);
  }

  // A norm weight: 1 + N(0, 0.1).
  void Norm(const std::string& name, int64_t size) {
    Random rng(options_.seed, name);
    std::vector<float> w(static_cast<size_t>(size));
    for (float& v : w) v = 1.0f + rng.Normal(0.1f);
    Add(name, options_.dtype == DType::kF32 ? DType::kF32 : DType::kBF16, {size}, w);
  }

  void Bias(const std::string& name, int64_t size, float stddev) {
    Random rng(options_.seed, name);
    std::vector<float> w(static_cast<size_t>(size));
    for (float& v : w) v = rng.Normal(stddev);
    Add(name, DType::kF32, {size}, w);
  }

  void Mlp(const std::string& prefix, int64_t hidden, int64_t inter) {
    Linear(prefix + ".gate_proj", inter, hidden, true);
    Linear(prefix + ".up_proj", inter, hidden, true);
    Linear(prefix + ".down_proj", hidden, inter, true);
  }

  std::vector<TensorToWrite>& tensors() { return tensors_; }

 private:
  void Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
           const std::vector<float>& values) {
    tensors_.push_back({name, dtype, std::move(shape), Encode(values, dtype)});
  }

  const MakeModelOptions& options_;
  std::vector<TensorToWrite> tensors_;
};

}  // namespace

absl::StatusOr<std::string> PresetConfigJson(const MakeModelOptions& options) {
  Json c;
  if (options.preset == "tiny") {
    c = TinyConfig();
  } else if (options.preset == "small") {
    c = SmallConfig();
  } else if (options.preset == "tiny-v2") {
    c = TinyConfig();
    c["model_type"] = "deepseek_v2";
    c["architectures"] = {"DeepseekV2ForCausalLM"};
    c["topk_method"] = "greedy";
    c["scoring_func"] = "softmax";
    c["norm_topk_prob"] = false;
    c["routed_scaling_factor"] = 1.0;
    c["n_group"] = 1;
    c["topk_group"] = 1;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("preset \"", options.preset,
                                                   "\" is not tiny, small or tiny-v2"));
  }
  if (!options.q_lora || options.preset == "tiny-v2") c["q_lora_rank"] = nullptr;
  if (options.n_routed_experts > 0) c["n_routed_experts"] = options.n_routed_experts;
  if (options.qk_nope_head_dim > 0) c["qk_nope_head_dim"] = options.qk_nope_head_dim;
  if (options.v_head_dim > 0) c["v_head_dim"] = options.v_head_dim;
  if (options.dtype == DType::kF8E4M3) {
    c["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {128, 128}}};
  }
  if (options.dtype == DType::kF32) c["torch_dtype"] = "float32";
  return c.dump(2) + "\n";
}

absl::Status MakeModel(const MakeModelOptions& options) {
  namespace fs = std::filesystem;
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16 &&
      options.dtype != DType::kF8E4M3) {
    return absl::InvalidArgumentError("dtype must be f32, bf16 or fp8");
  }
  if (options.shards < 1 || options.shards > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("shards ", options.shards, " outside 1..1000"));
  }
  if (options.out_dir.empty()) return absl::InvalidArgumentError("no output directory");
  ASSIGN_OR_RETURN(std::string config_text, PresetConfigJson(options));
  ASSIGN_OR_RETURN(ModelConfig c, ParseModelConfig(config_text));
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat(options.out_dir, ": ", ec.message()));
  }

  Writer w(options);
  const int64_t hidden = c.hidden_size, heads = c.num_attention_heads;
  w.Linear("model.embed_tokens", c.vocab_size, hidden, false, std::sqrt(static_cast<float>(hidden)));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto name = [l](const std::string& suffix) { return LayerTensorName(l, suffix); };
    w.Norm(name("input_layernorm.weight"), hidden);
    w.Norm(name("post_attention_layernorm.weight"), hidden);
    if (c.q_lora_rank > 0) {
      w.Linear(name("self_attn.q_a_proj"), c.q_lora_rank, hidden, true);
      w.Norm(name("self_attn.q_a_layernorm.weight"), c.q_lora_rank);
      w.Linear(name("self_attn.q_b_proj"), heads * c.qk_head_dim(), c.q_lora_rank, true);
    } else {
      w.Linear(name("self_attn.q_proj"), heads * c.qk_head_dim(), hidden, true);
    }
    w.Linear(name("self_attn.kv_a_proj_with_mqa"), c.kv_cache_dim(), hidden, true);
    w.Norm(name("self_attn.kv_a_layernorm.weight"), c.kv_lora_rank);
    w.Linear(name("self_attn.kv_b_proj"), heads * (c.qk_nope_head_dim + c.v_head_dim),
             c.kv_lora_rank, true);
    w.Linear(name("self_attn.o_proj"), hidden, heads * c.v_head_dim, true);
    if (!c.is_moe_layer(l)) {
      w.Mlp(name("mlp"), hidden, c.intermediate_size);
    } else {
      // Gate logits with std ~2 spread the sigmoid scores, so choices vary across tokens; the
      // correction bias is large enough to change some choices.
      w.Linear(name("mlp.gate"), c.n_routed_experts, hidden, false, 2.0f);
      if (c.topk_method == "noaux_tc") {
        w.Bias(name("mlp.gate.e_score_correction_bias"), c.n_routed_experts, 0.1f);
      }
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        w.Mlp(absl::StrCat(name("mlp.experts."), e), hidden, c.moe_intermediate_size);
      }
      if (c.n_shared_experts > 0) {
        w.Mlp(name("mlp.shared_experts"), hidden, c.moe_intermediate_size * c.n_shared_experts);
      }
    }
  }
  w.Norm("model.norm.weight", hidden);
  w.Linear("lm_head", c.vocab_size, hidden, false);

  {
    std::ofstream config_file(fs::path(options.out_dir) / "config.json");
    config_file << config_text;
    if (!config_file) return absl::DataLossError(absl::StrCat(options.out_dir, ": cannot write config.json"));
  }
  std::vector<TensorToWrite>& tensors = w.tensors();
  if (options.shards == 1) {
    return WriteSafetensors((fs::path(options.out_dir) / "model.safetensors").string(), tensors,
                            {{"format", "pt"}});
  }
  // Shard by contiguous tensor ranges of about equal bytes; index maps every tensor to its file.
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.bytes.size();
  Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", Json::object()}};
  size_t next = 0;
  uint64_t written = 0;
  for (int s = 0; s < options.shards; ++s) {
    const uint64_t target = total * (s + 1) / options.shards;
    std::vector<TensorToWrite> shard;
    while (next < tensors.size() && (written < target || s == options.shards - 1)) {
      written += tensors[next].bytes.size();
      shard.push_back(std::move(tensors[next++]));
    }
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1,
                                             options.shards);
    for (const auto& t : shard) index["weight_map"][t.name] = file;
    RETURN_IF_ERROR(WriteSafetensors((fs::path(options.out_dir) / file).string(), shard,
                                     {{"format", "pt"}}));
  }
  std::ofstream index_file(fs::path(options.out_dir) / "model.safetensors.index.json");
  index_file << index.dump(2) << "\n";
  if (!index_file) return absl::DataLossError("cannot write model.safetensors.index.json");
  return absl::OkStatus();
}

}  // namespace epinfer
