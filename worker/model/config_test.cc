#include "worker/model/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/model/make_model.h"

namespace epinfer {
namespace {

std::string ReadTestdata(const std::string& name) {
  std::ifstream in("worker/model/testdata/" + name);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The `small` preset of issue 3, shape by shape, so that other engines can be run on the same
// weights: a benchmark's numbers compare only if the shapes stay these.
TEST(ModelConfigTest, SmallPresetHasTheBenchmarkShapes) {
  for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    MakeModelOptions options;
    options.preset = "small";
    options.dtype = dtype;
    absl::StatusOr<std::string> json = PresetConfigJson(options);
    ASSERT_TRUE(json.ok()) << json.status();
    absl::StatusOr<ModelConfig> c = ParseModelConfig(*json);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->hidden_size, 1024);
    EXPECT_EQ(c->num_hidden_layers, 4);
    EXPECT_EQ(c->first_k_dense_replace, 1);
    EXPECT_EQ(c->intermediate_size, 2816);
    EXPECT_EQ(c->n_routed_experts, 64);
    EXPECT_EQ(c->num_experts_per_tok, 6);
    EXPECT_EQ(c->n_group, 8);
    EXPECT_EQ(c->topk_group, 4);
    EXPECT_EQ(c->n_shared_experts, 2);
    EXPECT_EQ(c->moe_intermediate_size, 512);
    EXPECT_EQ(c->num_attention_heads, 16);
    EXPECT_EQ(c->q_lora_rank, 384);
    EXPECT_EQ(c->kv_lora_rank, 256);
    EXPECT_EQ(c->qk_nope_head_dim, 64);
    EXPECT_EQ(c->qk_rope_head_dim, 32);
    EXPECT_EQ(c->v_head_dim, 64);
    EXPECT_EQ(c->vocab_size, 8192);
    ASSERT_TRUE(c->rope_scaling.has_value());
    EXPECT_EQ(c->rope_scaling->type, "yarn");
    EXPECT_EQ(c->rope_scaling->factor, 40);
    EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 4096);
    EXPECT_EQ(c->fp8_weights, dtype == DType::kF8E4M3);
  }
}

TEST(ModelConfigTest, DeepSeekV3ConfigParsesWithPublishedSizes) {
  auto c = ParseModelConfig(ReadTestdata("deepseek_v3_671b_config.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 7168);
  EXPECT_EQ(c->num_moe_layers(), 58);
  EXPECT_TRUE(c->fp8_weights);
  // DeepSeek-V3 technical report: 671B total parameters, 37B activated per token.
  EXPECT_EQ(std::llround(c->ParameterCount() / 1e9), 671) << c->ParameterCount();
  EXPECT_EQ(std::llround(c->ActiveParameterCount() / 1e9), 38) << c->ActiveParameterCount();
  // 576 latent values per token per layer; 70,272 bytes per token in BF16 over 61 layers.
  EXPECT_EQ(c->kv_cache_dim(), 576);
  EXPECT_EQ(c->KvBytesPerToken(2), 70272);
}

TEST(ModelConfigTest, SoftmaxScaleCarriesYarnMscaleSquared) {
  auto c = ParseModelConfig(ReadTestdata("deepseek_v3_671b_config.json"));
  ASSERT_TRUE(c.ok());
  const double mscale = 0.1 * std::log(40.0) + 1.0;  // 1.3689
  EXPECT_NEAR(mscale, 1.3689, 1e-4);
  EXPECT_DOUBLE_EQ(c->SoftmaxScale(), mscale * mscale / std::sqrt(192.0));
}

TEST(ModelConfigTest, V2LiteHasNoQLoraAndASoftmaxGreedyGate) {
  auto c = ParseModelConfig(ReadTestdata("deepseek_v2_lite_config.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, 0);
  EXPECT_EQ(c->scoring_func, "softmax");
  EXPECT_EQ(c->topk_method, "greedy");
  EXPECT_FALSE(c->fp8_weights);
  // DeepSeek-V2-Lite: 15.7B total parameters.
  EXPECT_NEAR(c->ParameterCount() / 1e9, 15.7, 0.1);
}

std::string Mutated(const std::string& field, const nlohmann::json& value) {
  auto j = nlohmann::json::parse(ReadTestdata("deepseek_v3_671b_config.json"));
  if (value.is_null() && field != "q_lora_rank") {
    j.erase(field);
  } else {
    j[field] = value;
  }
  return j.dump();
}

TEST(ModelConfigTest, ErrorsNameTheField) {
  struct Case {
    std::string field;
    nlohmann::json value;
  };
  for (const Case& c : std::vector<Case>{{"hidden_size", nullptr},
                                        {"hidden_size", "big"},
                                        {"hidden_size", -3},
                                        {"n_group", 3},
                                        {"topk_group", 9},
                                        {"num_experts_per_tok", 300},
                                        {"scoring_func", "relu"},
                                        {"topk_method", "random"},
                                        {"hidden_act", "gelu"},
                                        {"attention_bias", true},
                                        {"qk_rope_head_dim", 63},
                                        {"eos_token_id", 999999},
                                        {"rope_scaling", {{"type", "linear"}, {"factor", 2}}},
                                        {"rms_norm_eps", 5}}) {
    auto parsed = ParseModelConfig(Mutated(c.field, c.value));
    ASSERT_FALSE(parsed.ok()) << c.field << "=" << c.value.dump();
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(parsed.status().message()).find(c.field), std::string::npos)
        << parsed.status();
  }
}

TEST(ModelConfigTest, MalformedJsonIsAnError) {
  EXPECT_FALSE(ParseModelConfig("{").ok());
  EXPECT_FALSE(ParseModelConfig("[1,2]").ok());
  EXPECT_FALSE(ParseModelConfig("").ok());
  EXPECT_EQ(LoadModelConfig("/nonexistent/config.json").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace epinfer
