#include "worker/engine/engine.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "gtest/gtest.h"
#include "worker/comm/local.h"
#include "worker/model/generate.h"
#include "worker/model/make_model.h"

namespace epinfer {
namespace {

namespace fs = std::filesystem;

const std::string& TinyModelDir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string d = (fs::path(base ? base : "/tmp") / "engine_tiny").string();
    fs::remove_all(d);
    MakeModelOptions options;
    options.preset = "tiny";
    options.dtype = DType::kBF16;
    options.seed = 11;
    options.out_dir = d;
    EXPECT_TRUE(MakeModel(options).ok());
    return d;
  }();
  return dir;
}

std::unique_ptr<DeepseekV3Model> LoadTiny() {
  auto model = DeepseekV3Model::Load(TinyModelDir());
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back((i * 31 + salt * 17 + 5) % 512);
  return p;
}

// What a sequence produced, collected from its sink.
struct Outcome {
  std::vector<int32_t> tokens;
  std::optional<SequenceFinish> finish;
  absl::Status error;
};

SequenceRequest Request(const std::string& id, std::vector<int32_t> prompt, int64_t max_tokens,
                        float temperature = 0, uint64_t seed = 0) {
  SequenceRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  r.ignore_eos = true;
  return r;
}

// Reference: the sequence alone, through the plain generation loop.
std::vector<int32_t> Alone(const DeepseekV3Model& model, const SequenceRequest& r) {
  auto cache = model.MakeKvCache(8 << 20);
  auto comm = MakeSingleRankCommunicator();
  GenerateOptions options;
  options.sampling = r.sampling;
  options.max_tokens = r.max_tokens;
  options.ignore_eos = true;
  auto g = GenerateSequence(model, *cache, *comm, r.prompt, options);
  EXPECT_TRUE(g.ok()) << g.status();
  return g->tokens;
}

// Submits `requests` to one engine and steps until all finished (bounded).
std::map<std::string, Outcome> RunAll(Engine& engine, const std::vector<SequenceRequest>& requests) {
  std::map<std::string, Outcome> outcomes;
  for (const SequenceRequest& r : requests) {
    Outcome* o = &outcomes[r.id];
    absl::Status submitted = engine.Submit(r, [o](SequenceEvent e) {
      for (const SampledToken& t : e.tokens) o->tokens.push_back(t.token);
      if (e.finish) o->finish = e.finish;
      if (!e.error.ok()) o->error = e.error;
    });
    EXPECT_TRUE(submitted.ok()) << submitted;
  }
  for (int step = 0; step < 5000; ++step) {
    bool done = true;
    for (auto& [id, o] : outcomes) done = done && (o.finish || !o.error.ok());
    if (done) break;
    auto report = engine.Step();
    EXPECT_TRUE(report.ok()) << report.status();
  }
  return outcomes;
}

Engine MakeEngine(const DeepseekV3Model& model, int64_t kv_bytes, EngineOptions options = {}) {
  auto cache = model.MakeKvCache(kv_bytes, 4);
  EXPECT_TRUE(cache.ok());
  options.idle_wait = absl::ZeroDuration();
  return Engine(*std::move(cache), options);
}

TEST(EngineTest, GreedyOutputsDoNotDependOnWhatElseIsBatched) {
  auto model = LoadTiny();
  auto comm = MakeSingleRankCommunicator();
  Engine engine = MakeEngine(*model, 16 << 20);
  engine.Bind(model.get(), comm.get());
  std::vector<SequenceRequest> requests;
  for (int i = 0; i < 33; ++i) requests.push_back(Request("r" + std::to_string(i), Prompt(3 + i % 11, i), 6 + i % 5));
  auto outcomes = RunAll(engine, requests);
  for (const SequenceRequest& r : requests) {
    EXPECT_EQ(outcomes[r.id].finish, SequenceFinish::kLength) << r.id;
    EXPECT_EQ(outcomes[r.id].tokens, Alone(*model, r)) << r.id;
  }
  EXPECT_EQ(engine.stats().kv_blocks_free, engine.stats().kv_blocks_total);
}

TEST(EngineTest, SeededSamplingIsTheSameAloneAndBatched) {
  auto model = LoadTiny();
  auto comm = MakeSingleRankCommunicator();
  Engine engine = MakeEngine(*model, 16 << 20);
  engine.Bind(model.get(), comm.get());
  std::vector<SequenceRequest> requests;
  for (int i = 0; i < 8; ++i) {
    requests.push_back(Request("s" + std::to_string(i), Prompt(5, i), 10, 0.9f, 100 + i));
  }
  auto outcomes = RunAll(engine, requests);
  for (const SequenceRequest& r : requests) EXPECT_EQ(outcomes[r.id].tokens, Alone(*model, r));
}

TEST(EngineTest, ChunkedPrefillAndPreemptionKeepOutputs) {
  auto model = LoadTiny();
  auto comm = MakeSingleRankCommunicator();
  EngineOptions options;
  options.prefill_chunk_tokens = 5;
  options.max_tokens_per_step = 12;
  // 16 blocks of 4 tokens: four sequences of 23 + 12 tokens cannot all hold their KV at once.
  const int64_t block_bytes = 3 * (64 + 16) * 4 * 4;
  Engine engine = MakeEngine(*model, 16 * block_bytes, options);
  engine.Bind(model.get(), comm.get());
  EXPECT_EQ(engine.stats().kv_blocks_total, 16);
  std::vector<SequenceRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(Request("p" + std::to_string(i), Prompt(23, i), 12));
  auto outcomes = RunAll(engine, requests);
  for (const SequenceRequest& r : requests) {
    EXPECT_EQ(outcomes[r.id].finish, SequenceFinish::kLength) << r.id;
    EXPECT_EQ(outcomes[r.id].tokens, Alone(*model, r)) << r.id;
  }
  EXPECT_EQ(engine.stats().kv_blocks_free, 16);
}

TEST(EngineTest, CancelEndsTheSequenceAndFreesItsBlocks) {
  auto model = LoadTiny();
  auto comm = MakeSingleRankCommunicator();
  Engine engine = MakeEngine(*model, 16 << 20);
  engine.Bind(model.get(), comm.get());
  const int64_t total = engine.stats().kv_blocks_total;
  Outcome outcome;
  ASSERT_TRUE(engine.Submit(Request("c", Prompt(10, 1), 1000), [&](SequenceEvent e) {
    for (const SampledToken& t : e.tokens) outcome.tokens.push_back(t.token);
    if (e.finish) outcome.finish = e.finish;
  }).ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(engine.Step().ok());
  EXPECT_LT(engine.stats().kv_blocks_free, total);
  EXPECT_TRUE(engine.Cancel("c"));
  ASSERT_TRUE(engine.Step().ok());
  EXPECT_EQ(outcome.finish, SequenceFinish::kCancelled);
  EXPECT_EQ(engine.stats().kv_blocks_free, total);
  EXPECT_EQ(engine.stats().running, 0);
  EXPECT_FALSE(engine.Cancel("c"));
}

TEST(EngineTest, StopAndEosTokensEndTheSequenceWithoutBeingEmitted) {
  auto model = LoadTiny();
  auto comm = MakeSingleRankCommunicator();
  Engine engine = MakeEngine(*model, 16 << 20);
  engine.Bind(model.get(), comm.get());
  SequenceRequest base = Request("base", Prompt(6, 3), 5);
  const std::vector<int32_t> expected = Alone(*model, base);
  SequenceRequest stop = base;
  stop.id = "stop";
  stop.stop_token_ids = {expected[2]};
  SequenceRequest eos = base;
  eos.id = "eos";
  eos.ignore_eos = false;
  eos.eos_token_ids = {expected[1]};
  auto outcomes = RunAll(engine, {stop, eos});
  EXPECT_EQ(outcomes["stop"].finish, SequenceFinish::kStop);
  EXPECT_EQ(outcomes["stop"].tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 2));
  EXPECT_EQ(outcomes["eos"].finish, SequenceFinish::kEos);
  EXPECT_EQ(outcomes["eos"].tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 1));
}

TEST(EngineTest, BadRequestsAreRejectedWithReasons) {
  auto model = LoadTiny();
  auto comm = MakeSingleRankCommunicator();
  Engine engine = MakeEngine(*model, 1 << 20);
  engine.Bind(model.get(), comm.get());
  auto sink = [](SequenceEvent) {};
  EXPECT_EQ(engine.Submit(Request("a", {}, 4), sink).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Request("b", {1, 600}, 4), sink).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Request("c", {1}, 0), sink).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Request("d", {1}, 3000), sink).code(),  // beyond 2560 positions
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Request("e", {1}, 4, 5.0f), sink).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(engine.Submit(Request("f", {1}, 4), sink).ok());
  EXPECT_EQ(engine.Submit(Request("f", {1}, 4), sink).code(), absl::StatusCode::kAlreadyExists);
  engine.Drain();
  EXPECT_EQ(engine.Submit(Request("g", {1}, 4), sink).code(), absl::StatusCode::kUnavailable);
}

TEST(EngineTest, TwoRanksInLockstepGiveTheSingleRankOutputs) {
  auto single = LoadTiny();
  const std::string dir = TinyModelDir();
  auto config = LoadModelConfig(dir + "/config.json");
  std::vector<bool> moe;
  for (int64_t l = 0; l < config->num_hidden_layers; ++l) moe.push_back(config->is_moe_layer(l));
  auto placement = ExpertPlacement::Contiguous(config->num_hidden_layers, moe, 16, 2);
  auto group = LocalGroup::Create(2);
  std::vector<std::unique_ptr<DeepseekV3Model>> models;
  std::vector<std::unique_ptr<Engine>> engines;
  for (int r = 0; r < 2; ++r) {
    LoadOptions load;
    load.placement = *placement;
    load.rank = r;
    auto m = DeepseekV3Model::Load(dir, load);
    ASSERT_TRUE(m.ok());
    models.push_back(*std::move(m));
    auto cache = models[r]->MakeKvCache(8 << 20, 4);
    EngineOptions options;
    options.idle_wait = absl::ZeroDuration();
    engines.push_back(std::make_unique<Engine>(*std::move(cache), options));
    engines[r]->Bind(models[r].get(), group[r].get());
  }
  // Rank 0 gets three sequences, rank 1 one (it idles through the later steps but still joins).
  std::vector<SequenceRequest> requests = {Request("a", Prompt(9, 1), 7), Request("b", Prompt(2, 2), 9),
                                           Request("c", Prompt(14, 3), 3), Request("d", Prompt(5, 4), 2)};
  std::map<std::string, Outcome> outcomes;
  for (size_t i = 0; i < requests.size(); ++i) {
    Outcome* o = &outcomes[requests[i].id];
    ASSERT_TRUE(engines[i == 3 ? 1 : 0]->Submit(requests[i], [o](SequenceEvent e) {
      for (const SampledToken& t : e.tokens) o->tokens.push_back(t.token);
      if (e.finish) o->finish = e.finish;
    }).ok());
  }
  std::vector<std::thread> threads;
  std::vector<absl::Status> errors(2);
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      for (int step = 0; step < 40; ++step) {
        auto report = engines[r]->Step();
        if (!report.ok()) {
          errors[r] = report.status();
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(errors[r].ok()) << errors[r];
  for (const SequenceRequest& r : requests) {
    EXPECT_EQ(outcomes[r.id].finish, SequenceFinish::kLength) << r.id;
    EXPECT_EQ(outcomes[r.id].tokens, Alone(*single, r)) << r.id;
  }
}

}  // namespace
}  // namespace epinfer
