#include "worker/model/model.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "gtest/gtest.h"
#include "worker/model/make_model.h"
#include "worker/model/safetensors.h"

namespace epinfer {
namespace {

namespace fs = std::filesystem;

std::string MakeTiny(const std::string& name, DType dtype, int shards = 1,
                     int64_t head_dims = 0) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string dir = (fs::path(base ? base : "/tmp") / name).string();
  fs::remove_all(dir);
  MakeModelOptions options;
  options.preset = "tiny";
  options.dtype = dtype;
  options.seed = 5;
  options.out_dir = dir;
  options.shards = shards;
  options.qk_nope_head_dim = options.v_head_dim = head_dims;
  EXPECT_TRUE(MakeModel(options).ok());
  return dir;
}

// Logits of every position of `tokens` in one prefill step.
std::vector<float> Prefill(const DeepseekV3Model& model, const std::vector<int32_t>& tokens,
                           AttentionForm form) {
  auto cache = model.MakeKvCache(16 << 20);
  EXPECT_TRUE(cache.ok());
  KvBlockTable kv;
  EXPECT_TRUE(cache->Reserve(kv, static_cast<int64_t>(tokens.size())).ok());
  auto comm = MakeSingleRankCommunicator();
  SequenceStep step{tokens, 0, &kv, true};
  std::vector<float> logits;
  ForwardOptions options;
  options.attention = form;
  absl::Status status = model.Forward({&step, 1}, *cache, *comm, options, &logits);
  EXPECT_TRUE(status.ok()) << status;
  return logits;
}

float MaxAbs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<int32_t> Prompt(int n) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < n; ++i) tokens.push_back((i * 37 + 11) % 512);
  return tokens;
}

void ExpectNaiveAndAbsorbedAgree(const std::string& dir, bool transposed_uk, int prompt = 20) {
  auto model = DeepseekV3Model::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  // Whether the absorbed form reads W_UK through its transposed copy or kv_b_proj as stored.
  EXPECT_EQ((*model)->weights().layers[0].kv_b_uk_t.empty(), !transposed_uk);
  const auto tokens = Prompt(prompt);
  auto naive = Prefill(**model, tokens, AttentionForm::kNaive);
  auto absorbed = Prefill(**model, tokens, AttentionForm::kAbsorbed);
  EXPECT_LE(MaxDiff(naive, absorbed), 1e-5f * MaxAbs(naive));
}

TEST(DeepseekV3ModelTest, NaiveAndAbsorbedAttentionAgree) {
  ExpectNaiveAndAbsorbedAgree(MakeTiny("naive_absorbed_f32", DType::kF32), true);
  ExpectNaiveAndAbsorbedAgree(MakeTiny("naive_absorbed_bf16", DType::kBF16), true);
  ExpectNaiveAndAbsorbedAgree(MakeTiny("naive_absorbed_fp8", DType::kF8E4M3), true);
}

TEST(DeepseekV3ModelTest, NaiveAndAbsorbedAttentionAgreeOverALongStep) {
  // 64 tokens absorbed in one step read Σ(p + 1) × 80 floats = 666 KB of cache, over the 512 KB
  // from which each thread takes one head group instead of two.
  ExpectNaiveAndAbsorbedAgree(MakeTiny("naive_absorbed_long_fp8", DType::kF8E4M3), true, 64);
}

TEST(DeepseekV3ModelTest, AbsorbedAttentionWhereFp8HeadsStraddleScaleBlocks) {
  // 48 + 48 rows per head of kv_b_proj: head 1's k_nope rows 96-143 cross the 128-row scale
  // block, so no transposed FP8 copy with per-row scales exists; BF16 still gets one.
  ExpectNaiveAndAbsorbedAgree(MakeTiny("straddle_fp8", DType::kF8E4M3, 1, 48), false);
  ExpectNaiveAndAbsorbedAgree(MakeTiny("straddle_bf16", DType::kBF16, 1, 48), true);
}

TEST(DeepseekV3ModelTest, BatchedSequencesGetTheSameLogitsAsAlone) {
  auto model = DeepseekV3Model::Load(MakeTiny("batched", DType::kF8E4M3));
  ASSERT_TRUE(model.ok()) << model.status();
  const auto a = Prompt(9), b = Prompt(4);
  auto alone_a = Prefill(**model, a, AttentionForm::kAuto);
  auto alone_b = Prefill(**model, b, AttentionForm::kAuto);
  auto cache = (*model)->MakeKvCache(16 << 20);
  ASSERT_TRUE(cache.ok());
  KvBlockTable kv_a, kv_b;
  ASSERT_TRUE(cache->Reserve(kv_a, 9).ok());
  ASSERT_TRUE(cache->Reserve(kv_b, 4).ok());
  auto comm = MakeSingleRankCommunicator();
  std::vector<SequenceStep> batch = {{a, 0, &kv_a, true}, {b, 0, &kv_b, true}};
  std::vector<float> logits;
  ASSERT_TRUE((*model)->Forward(batch, *cache, *comm, {}, &logits).ok());
  std::vector<float> together_a(logits.begin(), logits.begin() + alone_a.size());
  std::vector<float> together_b(logits.begin() + alone_a.size(), logits.end());
  EXPECT_LE(MaxDiff(alone_a, together_a), 1e-5f * MaxAbs(alone_a));
  EXPECT_LE(MaxDiff(alone_b, together_b), 1e-5f * MaxAbs(alone_b));
}

TEST(DeepseekV3ModelTest, ARankReadsOnlyTheExpertsOfItsSlots) {
  const std::string dir = MakeTiny("selective", DType::kF8E4M3, 3);
  auto config = LoadModelConfig(dir + "/config.json");
  ASSERT_TRUE(config.ok());
  std::vector<bool> moe;
  for (int64_t l = 0; l < config->num_hidden_layers; ++l) moe.push_back(config->is_moe_layer(l));
  auto placement = ExpertPlacement::Contiguous(config->num_hidden_layers, moe, 16, 4);
  ASSERT_TRUE(placement.ok());
  LoadOptions options;
  options.placement = *placement;
  options.rank = 1;  // experts 4..7
  auto model = DeepseekV3Model::Load(dir, options);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::regex expert(R"(model\.layers\.\d+\.mlp\.experts\.(\d+)\..*)");
  int own = 0;
  for (const std::string& name : (*model)->checkpoint().Accessed()) {
    std::smatch m;
    if (!std::regex_match(name, m, expert)) continue;
    const int e = std::stoi(m[1]);
    EXPECT_TRUE(e >= 4 && e < 8) << name << " read by rank 1";
    ++own;
  }
  // 2 MoE layers × 4 experts × (gate, up, down) × (weight, scale_inv).
  EXPECT_EQ(own, 2 * 4 * 3 * 2);
}

// x rounded to a value F16 holds exactly (10 mantissa bits, |x| >= 2^-14 or 0) and that value's
// F16 bits: the test needs both sides of the comparison to carry the same numbers.
std::pair<float, uint16_t> RoundToF16(float x) {
  if (!(std::fabs(x) >= 0x1p-14f)) return {0.0f, 0};
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & ~0x1fffu;  // nearest, ties away: any rounding will do, both sides agree
  float rounded;
  std::memcpy(&rounded, &u, 4);
  const uint32_t exponent = ((u >> 23) & 0xff) - 127 + 15;
  return {rounded, static_cast<uint16_t>(((u >> 16) & 0x8000u) | (exponent << 10) |
                                         ((u >> 13) & 0x3ffu))};
}

TEST(DeepseekV3ModelTest, F16CheckpointGivesTheLogitsOfItsValuesInF32) {
  // The tiny f32 checkpoint with every tensor rounded to F16 values, written twice: as F16 and
  // as F32. Loading converts F16 to F32, so both must give the same logits.
  const std::string source = MakeTiny("f16_source", DType::kF32);
  auto checkpoint = Checkpoint::Open(source);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  std::vector<TensorToWrite> f16, f32;
  for (const std::string& name : (*checkpoint)->Names()) {
    auto t = (*checkpoint)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->info->dtype, DType::kF32) << name;
    const int64_t n = t->info->num_elements();
    std::string half(static_cast<size_t>(n * 2), '\0'), single(static_cast<size_t>(n * 4), '\0');
    for (int64_t i = 0; i < n; ++i) {
      float x;
      std::memcpy(&x, t->data + 4 * i, 4);
      const auto [rounded, bits] = RoundToF16(x);
      std::memcpy(&half[2 * i], &bits, 2);
      std::memcpy(&single[4 * i], &rounded, 4);
    }
    f16.push_back({name, DType::kF16, t->info->shape, std::move(half)});
    f32.push_back({name, DType::kF32, t->info->shape, std::move(single)});
  }
  const fs::path dir = fs::path(source).parent_path();
  for (const auto& [sub, tensors] : {std::pair{"f16_half", &f16}, std::pair{"f16_single", &f32}}) {
    fs::create_directories(dir / sub);
    fs::copy_file(fs::path(source) / "config.json", dir / sub / "config.json",
                  fs::copy_options::overwrite_existing);
    ASSERT_TRUE(WriteSafetensors((dir / sub / "model.safetensors").string(), *tensors).ok());
  }
  auto half = DeepseekV3Model::Load((dir / "f16_half").string());
  auto single = DeepseekV3Model::Load((dir / "f16_single").string());
  ASSERT_TRUE(half.ok()) << half.status();
  ASSERT_TRUE(single.ok()) << single.status();
  const auto tokens = Prompt(9);
  const auto want = Prefill(**single, tokens, AttentionForm::kAuto);
  const auto got = Prefill(**half, tokens, AttentionForm::kAuto);
  EXPECT_LE(MaxDiff(got, want), 1e-6f * MaxAbs(want));
  EXPECT_GT(MaxAbs(want), 0.0f);
}

TEST(DeepseekV3ModelTest, ConfigThatDisagreesWithTheWeightsNamesTensorAndShape) {
  const std::string dir = MakeTiny("mismatch", DType::kBF16);
  std::ifstream in(dir + "/config.json");
  std::stringstream text;
  text << in.rdbuf();
  in.close();
  std::string config = std::regex_replace(text.str(), std::regex("\"intermediate_size\": 384"),
                                          "\"intermediate_size\": 400");
  std::ofstream(dir + "/config.json") << config;
  auto model = DeepseekV3Model::Load(dir);
  ASSERT_FALSE(model.ok());
  const std::string message(model.status().message());
  EXPECT_NE(message.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("shape [384,256], expected [400,256]"), std::string::npos) << message;
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
}

TEST(DeepseekV3ModelTest, BadInputIsAnErrorNotACrash) {
  auto model = DeepseekV3Model::Load(MakeTiny("bad_input", DType::kF32));
  ASSERT_TRUE(model.ok());
  auto cache = (*model)->MakeKvCache(1 << 20);
  ASSERT_TRUE(cache.ok());
  auto comm = MakeSingleRankCommunicator();
  std::vector<float> logits;
  KvBlockTable kv;
  ASSERT_TRUE(cache->Reserve(kv, 4).ok());
  std::vector<int32_t> out_of_vocab = {1, 512};
  SequenceStep step{out_of_vocab, 0, &kv, true};
  EXPECT_EQ((*model)->Forward({&step, 1}, *cache, *comm, {}, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> too_long(40, 3);
  SequenceStep unreserved{too_long, 0, &kv, true};
  EXPECT_EQ((*model)->Forward({&unreserved, 1}, *cache, *comm, {}, &logits).code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<int32_t> ok = {1, 2};
  SequenceStep wrong_start{ok, 3, &kv, true};
  EXPECT_EQ((*model)->Forward({&wrong_start, 1}, *cache, *comm, {}, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.num_tokens, 0);  // nothing was written
}

TEST(DeepseekV3ModelTest, EmptyBatchStillRunsEveryLayer) {
  auto model = DeepseekV3Model::Load(MakeTiny("empty", DType::kBF16));
  ASSERT_TRUE(model.ok());
  auto cache = (*model)->MakeKvCache(1 << 20);
  auto comm = MakeSingleRankCommunicator();
  std::vector<float> logits = {1.0f};
  ForwardStats stats;
  ASSERT_TRUE((*model)->Forward({}, *cache, *comm, {}, &logits, &stats).ok());
  EXPECT_TRUE(logits.empty());
  EXPECT_EQ(stats.moe[1].tokens_per_logical_expert.size(), 16u);  // the MoE layer ran
}

}  // namespace
}  // namespace epinfer
