#include "worker/worker_main.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/server_flags.h"
#include "common/server_process.h"
#include "spdlog/spdlog.h"
#include "worker/comm/transport.h"
#include "worker/comm/ucx.h"
#include "worker/engine/engine.h"
#include "worker/flags.h"
#include "worker/group_client.h"
#include "worker/kernels/linear.h"
#include "worker/telemetry.h"
#include "worker/worker_metrics.h"
#include "worker/worker_service.h"

ABSL_FLAG(std::string, worker_id, "",
          "Stable identity across restarts (a restarted worker gets its rank back); default "
          "<advertise_host>:<port>.");
ABSL_FLAG(std::string, advertise_host, "",
          "Host the router and peers reach this worker at; default: --bind, or the hostname "
          "when --bind is a wildcard.");
ABSL_FLAG(int64_t, max_tokens_per_step, 512, "Tokens (decode + prefill) per step on this rank.");
ABSL_FLAG(int64_t, prefill_chunk_tokens, 256, "Largest prefill chunk of one sequence per step.");
ABSL_FLAG(int64_t, max_running_sequences, 256, "Sequences computed concurrently on this rank.");
ABSL_FLAG(int, collective_timeout_s, 30, "Deadline of every collective of the EP group.");
ABSL_FLAG(std::string, scheduler, "",
          "The scheduler (host:port) to stream expert-load telemetry to; empty: none.");
ABSL_FLAG(int, telemetry_interval_ms, 1000, "How often telemetry windows are sent.");

namespace epinfer {
namespace {

constexpr char kUsage[] = "--model DIR [--router HOST:PORT] [flags]";

struct GroupLoop {
  Engine& engine;
  WorkerIdentity& identity;
  WorkerMetrics& metrics;
  std::string model_dir;
  ModelConfig config;
  std::string transport = "ucx";  // of the communicator of a group through the router
  std::unique_ptr<GroupClient> client;  // null: a one-rank group of its own
  std::unique_ptr<TelemetryReporter> telemetry;  // null: no scheduler
  std::atomic<bool> stopping{false};
  std::atomic<bool> rejoin{false};
  std::atomic<uint64_t> epoch{0};
  std::atomic<int64_t> heartbeat_ms{500};
  // Live rebalancing: the heartbeat announces a newer placement; the loader thread loads this
  // rank's experts of it beside the running model and stages it in the engine.
  std::atomic<uint64_t> wanted_version{0};
  std::atomic<int> rank{0};
  absl::Mutex models_mu;
  std::unique_ptr<DeepseekV3Model> staged ABSL_GUARDED_BY(models_mu);
  uint64_t staged_version ABSL_GUARDED_BY(models_mu) = 0;

  void PlacementLoader() {
    uint64_t done = 0;
    while (!stopping.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const uint64_t wanted = wanted_version.load();
      if (client == nullptr || wanted == 0 || wanted == done || wanted <= engine.placement_version()) {
        continue;
      }
      absl::StatusOr<ExpertPlacement> placement = client->CurrentPlacement();
      if (!placement.ok() || placement->version < wanted) continue;
      const uint64_t current_epoch = epoch.load();
      LoadOptions load;
      load.placement = *placement;
      load.rank = rank.load();
      const absl::Time start = absl::Now();
      absl::StatusOr<std::unique_ptr<DeepseekV3Model>> model = DeepseekV3Model::Load(model_dir, load);
      if (!model.ok()) {
        spdlog::warn("placement {}: {}", placement->version, model.status().ToString());
        continue;
      }
      if (epoch.load() != current_epoch) continue;  // the group re-formed meanwhile
      absl::MutexLock lock(&models_mu);
      staged = *std::move(model);
      staged_version = placement->version;
      engine.StagePlacement(staged.get(), staged_version);
      done = placement->version;
      spdlog::info("placement {} loaded in {} ms; switching when every rank has it",
                   staged_version, absl::ToInt64Milliseconds(absl::Now() - start));
    }
  }

  void Heartbeats() {
    while (!stopping.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(heartbeat_ms.load()));
      const uint64_t current = epoch.load();
      if (client == nullptr || current == 0) continue;
      const EngineStats stats = engine.stats();
      v1::WorkerLoad load;
      load.set_running_sequences(static_cast<uint32_t>(stats.running));
      load.set_waiting_sequences(static_cast<uint32_t>(stats.waiting));
      load.set_kv_blocks_free(static_cast<uint32_t>(stats.kv_blocks_free));
      load.set_kv_blocks_total(static_cast<uint32_t>(stats.kv_blocks_total));
      load.set_outstanding_tokens(static_cast<uint64_t>(stats.outstanding_tokens));
      absl::StatusOr<GroupClient::Beat> beat = client->Heartbeat(current, load);
      if (beat.ok() && !beat->known) {
        spdlog::info("router moved to epoch {} (this rank runs {}): re-joining", beat->epoch,
                     current);
        rejoin = true;
      }
      if (beat.ok() && beat->known) {
        if (beat->placement_version > engine.placement_version()) {
          wanted_version = beat->placement_version;
        }
        if (beat->max_tokens_per_step > 0) {
          engine.SetBudget(beat->max_tokens_per_step, beat->prefill_chunk_tokens);
          metrics.SetBudget(beat->max_tokens_per_step);
        }
      }
    }
  }

  void Run() {
    std::unique_ptr<DeepseekV3Model> model;
    std::vector<std::vector<int32_t>> loaded_experts;
    int loaded_rank = -1;
    while (!stopping.load()) {
      GroupClient::Membership m;
      std::unique_ptr<Communicator> comm;
      if (client == nullptr) {
        std::vector<bool> moe(static_cast<size_t>(config.num_hidden_layers));
        for (int64_t l = 0; l < config.num_hidden_layers; ++l) moe[l] = config.is_moe_layer(l);
        m.epoch = 1;
        m.world_size = 1;
        m.placement = *ExpertPlacement::Contiguous(config.num_hidden_layers, moe,
                                                   static_cast<int32_t>(config.n_routed_experts), 1);
        comm = MakeSingleRankCommunicator();
      } else {
        absl::StatusOr<GroupClient::Membership> joined = client->Join(absl::Now() + absl::Seconds(5));
        if (!joined.ok()) {
          if (joined.status().code() != absl::StatusCode::kDeadlineExceeded) {
            spdlog::warn("joining the EP group: {}", joined.status().ToString());
          }
          continue;
        }
        m = *std::move(joined);
        heartbeat_ms = absl::ToInt64Milliseconds(m.heartbeat_interval);
      }
      // Reload only when this rank's experts changed.
      std::vector<std::vector<int32_t>> experts;
      for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
        experts.push_back(config.is_moe_layer(l) ? m.placement.LocalExperts(l, m.rank)
                                                 : std::vector<int32_t>());
      }
      if (model == nullptr || experts != loaded_experts || m.rank != loaded_rank) {
        LoadOptions load;
        load.placement = m.placement;
        load.rank = m.rank;
        engine.Bind(nullptr, nullptr);
        absl::StatusOr<std::unique_ptr<DeepseekV3Model>> loaded =
            DeepseekV3Model::Load(model_dir, load);
        if (!loaded.ok()) {
          spdlog::critical("loading {} for rank {}: {}", model_dir, m.rank,
                           loaded.status().ToString());
          std::this_thread::sleep_for(std::chrono::seconds(1));
          continue;
        }
        model = *std::move(loaded);
        loaded_experts = experts;
        loaded_rank = m.rank;
      }
      // Publish this rank's address (which completes the group) only once its experts are
      // loaded, so the router never routes to a rank that cannot compute yet.
      if (client != nullptr) {
        auto rendezvous = client->RendezvousFor(m);
        absl::StatusOr<std::unique_ptr<Communicator>> joined =
            MakeProcessCommunicator(transport, m.rank, m.world_size, *rendezvous,
                                    absl::Now() + absl::Seconds(30),
                                    absl::GetFlag(FLAGS_comm_lanes));
        if (!joined.ok()) {
          spdlog::warn("epoch {}: communicator: {}", m.epoch, joined.status().ToString());
          metrics.GroupFailure();
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          continue;
        }
        comm = *std::move(joined);
      }
      engine.Bind(model.get(), comm.get(), m.placement.version);
      {
        absl::MutexLock lock(&models_mu);
        staged.reset();
        staged_version = 0;
      }
      rank = m.rank;
      if (telemetry) telemetry->SetGroup(m.rank, m.epoch, m.placement.version);
      {
        absl::MutexLock lock(&identity.mu);
        identity.rank = m.rank;
        identity.world_size = m.world_size;
        identity.epoch = m.epoch;
        identity.placement_version = m.placement.version;
        identity.expert_slots = static_cast<int64_t>(experts[config.first_k_dense_replace].size());
      }
      metrics.SetGroup(m.epoch, m.rank, m.world_size, m.placement.version);
      rejoin = false;
      epoch = m.epoch;
      spdlog::info("epoch {}: rank {} of {} ({} {}), {} expert slots per MoE layer", m.epoch,
                   m.rank, m.world_size, comm->backend(), model_dir,
                   experts[config.first_k_dense_replace].size());
      while (!rejoin.load()) {
        absl::StatusOr<StepReport> step = engine.Step();
        if (!step.ok()) {
          // The step left every sequence as it was; re-form the group and retry it.
          spdlog::warn("epoch {}: step failed: {}; re-joining", m.epoch, step.status().ToString());
          metrics.GroupFailure();
          break;
        }
        metrics.RecordStep(*step);
        metrics.SetEngine(engine.stats());
        if (step->switched_to != 0) {
          // Every rank now runs the new placement: the old experts can go.
          absl::MutexLock lock(&models_mu);
          if (staged != nullptr && staged_version == step->switched_to) model = std::move(staged);
          staged_version = 0;
          {
            absl::MutexLock id_lock(&identity.mu);
            identity.placement_version = step->switched_to;
          }
          metrics.SetGroup(m.epoch, m.rank, m.world_size, step->switched_to);
          if (telemetry) telemetry->SetGroup(m.rank, m.epoch, step->switched_to);
          spdlog::info("epoch {}: switched to placement {}", m.epoch, step->switched_to);
        }
        if (telemetry) telemetry->AddStep(*step);
        if (step->stop) {
          stopping = true;
          break;
        }
      }
      engine.Bind(model.get(), nullptr);
      epoch = 0;
    }
  }
};

std::string DefaultAdvertiseHost(const std::string& bind) {
  if (bind != "0.0.0.0" && bind != "::" && bind != "[::]") return bind;
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

}  // namespace

int RunWorker(int argc, char** argv) {
  ServerProcess process(
      "worker", argc, argv, kUsage,
      ServerFlagNames({"model", "router", "worker_id", "advertise_host", "threads", "kv_cache_mb",
                       "comm_lanes",
                       "transport", "max_tokens_per_step", "prefill_chunk_tokens",
                       "max_running_sequences", "collective_timeout_s", "scheduler",
                       "telemetry_interval_ms"}));
  absl::StatusOr<ServerAddresses> addresses = ResolveServerFlags(50061, 9401);
  process.CheckFlag(addresses.status());
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) process.CheckFlag(absl::InvalidArgumentError("--model is required"));
  const std::string transport = absl::GetFlag(FLAGS_transport);
  if (!transport.empty()) process.CheckFlag(CheckProcessTransport(transport));
  if (absl::GetFlag(FLAGS_comm_lanes) < 1 || absl::GetFlag(FLAGS_comm_lanes) > kMaxUcxLanes) {
    process.CheckFlag(absl::InvalidArgumentError("--comm_lanes must be in 1..16"));
  }
  if (absl::GetFlag(FLAGS_max_tokens_per_step) < 1 || absl::GetFlag(FLAGS_prefill_chunk_tokens) < 1 ||
      absl::GetFlag(FLAGS_max_running_sequences) < 1) {
    process.CheckFlag(absl::InvalidArgumentError(
        "--max_tokens_per_step, --prefill_chunk_tokens and --max_running_sequences must be >= 1"));
  }
  if (absl::GetFlag(FLAGS_kv_cache_mb) < 1) {
    process.CheckFlag(absl::InvalidArgumentError("--kv_cache_mb must be >= 1"));
  }
  SetKernelThreads(absl::GetFlag(FLAGS_threads));

  absl::StatusOr<ModelConfig> config =
      LoadModelConfig((std::filesystem::path(model_dir) / "config.json").string());
  process.CheckStartup(config.status());
  // The KV cache outlives epochs: a re-formed group keeps the running sequences.
  const int64_t block_tokens = 16;
  const int64_t blocks = KvCache::BlocksForBudget(absl::GetFlag(FLAGS_kv_cache_mb) << 20,
                                                  config->num_hidden_layers,
                                                  config->kv_cache_dim(), block_tokens);
  absl::StatusOr<KvCache> cache =
      KvCache::Create({config->num_hidden_layers, config->kv_cache_dim(), block_tokens, blocks});
  process.CheckStartup(cache.status());
  EngineOptions options;
  options.max_tokens_per_step = absl::GetFlag(FLAGS_max_tokens_per_step);
  options.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk_tokens);
  options.max_running_sequences = absl::GetFlag(FLAGS_max_running_sequences);
  options.forward.collective_timeout = absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_s));
  Engine engine(*std::move(cache), options);

  WorkerIdentity identity;
  identity.model = std::filesystem::path(model_dir).filename().string();
  if (identity.model.empty()) identity.model = std::filesystem::path(model_dir).parent_path().filename().string();
  identity.context_length = config->max_position_embeddings;
  identity.vocab_size = config->vocab_size;
  identity.block_size_tokens = block_tokens;
  identity.bytes_per_token = config->kv_cache_dim() * config->num_hidden_layers * 4;

  process.CheckStartup(process.StartMetrics(addresses->metrics));
  WorkerMetrics metrics(process.metrics().registry());
  WorkerService service(engine, identity, &metrics);
  absl::StatusOr<GrpcServer*> server = process.Serve("grpc", addresses->grpc, {&service});
  process.CheckStartup(server.status());

  GroupLoop loop{engine, identity, metrics, model_dir, *config};
  if (!transport.empty()) loop.transport = transport;
  if (const std::string router = absl::GetFlag(FLAGS_router); !router.empty()) {
    GroupClient::Identity me;
    const std::string bind = HostOf(addresses->grpc);
    me.host = absl::GetFlag(FLAGS_advertise_host).empty() ? DefaultAdvertiseHost(bind)
                                                          : absl::GetFlag(FLAGS_advertise_host);
    me.port = (*server)->ports().front();
    me.metrics_port = process.metrics().port();
    me.transport = loop.transport;
    me.worker_id = absl::GetFlag(FLAGS_worker_id).empty() ? absl::StrCat(me.host, ":", me.port)
                                                          : absl::GetFlag(FLAGS_worker_id);
    loop.client = std::make_unique<GroupClient>(
        grpc::CreateChannel(router, grpc::InsecureChannelCredentials()), me, *config,
        identity.model);
  }
  if (const std::string scheduler = absl::GetFlag(FLAGS_scheduler); !scheduler.empty()) {
    loop.telemetry = std::make_unique<TelemetryReporter>(
        grpc::CreateChannel(scheduler, grpc::InsecureChannelCredentials()),
        absl::Milliseconds(std::max(50, absl::GetFlag(FLAGS_telemetry_interval_ms))));
  }
  std::thread heartbeats([&loop] { loop.Heartbeats(); });
  std::thread loader([&loop] { loop.PlacementLoader(); });
  // OpenMP's thread count is per calling thread: the step thread runs the kernels, so it sets it.
  std::thread steps([&loop] {
    SetKernelThreads(absl::GetFlag(FLAGS_threads));
    loop.Run();
  });

  const int code = process.Run(addresses->drain, [&] {
    // Stop admitting, let running sequences finish (bounded), then leave the group together.
    engine.Drain();
    {
      absl::MutexLock lock(&identity.mu);
      identity.draining = true;
    }
    const absl::Time until = absl::Now() + addresses->drain;
    while (absl::Now() < until) {
      const EngineStats stats = engine.stats();
      if (stats.running + stats.waiting == 0) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    engine.RequestStop();
    const absl::Time stop_until = absl::Now() + absl::Seconds(5);
    while (!loop.stopping.load() && absl::Now() < stop_until) absl::SleepFor(absl::Milliseconds(10));
    loop.stopping = true;
    loop.rejoin = true;
    engine.FailAll(absl::UnavailableError("worker shut down"));
  });
  steps.join();
  heartbeats.join();
  loader.join();
  loop.telemetry.reset();
  return code;
}

}  // namespace epinfer
