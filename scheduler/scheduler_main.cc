#include "scheduler/scheduler_main.h"

#include <atomic>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/server_flags.h"
#include "common/server_process.h"
#include "epinfer/v1/cluster.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "scheduler/load_window.h"
#include "scheduler/rebalancer.h"
#include "scheduler/scheduler_service.h"
#include "spdlog/spdlog.h"
#include "worker/flags.h"
#include "worker/model/placement_proto.h"

ABSL_FLAG(int, rebalance_interval_s, 10, "How often the balancer looks at the load window.");
ABSL_FLAG(double, imbalance_threshold, 1.15,
          "Rebalance when the worst MoE layer's max/mean rank load exceeds this.");
ABSL_FLAG(int, window_s, 30, "Sliding window of expert-load telemetry, in seconds.");
ABSL_FLAG(double, min_window_tokens, 1000, "Do not rebalance on less traffic than this.");
ABSL_FLAG(int, eplb_num_nodes, 1, "Nodes the EP group spans (EPLB's hierarchical policy).");
ABSL_FLAG(int, eplb_num_groups, 1, "Expert groups (n_group) for EPLB's hierarchical policy.");
ABSL_FLAG(int, base_tokens_per_step, 512,
          "Batch scaling: the mean per-rank step budget, split by the ranks' measured speed.");
ABSL_FLAG(bool, per_expert_metrics, false,
          "Export tokens per (layer, logical expert) (layers × experts series).");

namespace epinfer {
namespace {

struct SchedulerMetrics {
  explicit SchedulerMetrics(prometheus::Registry& r)
      : layer_imbalance(prometheus::BuildGauge()
                            .Name("epinfer_scheduler_layer_imbalance")
                            .Help("Per MoE layer: max / mean of the tokens the ranks received in "
                                  "the window.")
                            .Register(r)),
        imbalance(prometheus::BuildGauge()
                      .Name("epinfer_scheduler_imbalance")
                      .Help("Over all MoE layers, what a step waits for: the sum over layers "
                            "of the most loaded rank's load / the sum of the mean load.")
                      .Register(r)
                      .Add({})),
        rebalance_imbalance(prometheus::BuildGauge()
                                .Name("epinfer_scheduler_rebalance_imbalance")
                                .Help("Worst layer's imbalance at the last rebalance: when="
                                      "before (measured) or after (predicted by EPLB).")
                                .Register(r)),
        placement_version(prometheus::BuildGauge()
                              .Name("epinfer_scheduler_placement_version")
                              .Help("Newest expert placement version the ranks report.")
                              .Register(r)
                              .Add({})),
        rebalances(prometheus::BuildCounter()
                       .Name("epinfer_scheduler_rebalances_total")
                       .Help("New placements proposed to the router (and accepted).")
                       .Register(r)
                       .Add({})),
        rebalance_seconds(prometheus::BuildHistogram()
                              .Name("epinfer_scheduler_rebalance_duration_seconds")
                              .Help("From proposing a placement until every rank reports "
                                    "running it.")
                              .Register(r)
                              .Add({}, prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60})),
        live_ranks(prometheus::BuildGauge()
                       .Name("epinfer_scheduler_live_ranks")
                       .Help("Ranks of the EP group the router reports alive.")
                       .Register(r)
                       .Add({})),
        budget(prometheus::BuildGauge()
                   .Name("epinfer_scheduler_rank_token_budget")
                   .Help("Per-rank step token budget the scheduler set.")
                   .Register(r)),
        expert_tokens(prometheus::BuildGauge()
                          .Name("epinfer_scheduler_expert_tokens")
                          .Help("Tokens routed to each logical expert in the window "
                                "(--per_expert_metrics).")
                          .Register(r)) {}

  prometheus::Family<prometheus::Gauge>& layer_imbalance;
  prometheus::Gauge& imbalance;
  prometheus::Family<prometheus::Gauge>& rebalance_imbalance;
  prometheus::Gauge& placement_version;
  prometheus::Counter& rebalances;
  prometheus::Histogram& rebalance_seconds;
  prometheus::Gauge& live_ranks;
  prometheus::Family<prometheus::Gauge>& budget;
  prometheus::Family<prometheus::Gauge>& expert_tokens;
};

// The balancing loop: read the window, decide, propose to the router; set batch budgets.
class Balancer {
 public:
  Balancer(LoadWindow& window, SchedulerMetrics& metrics, std::string router)
      : window_(window), metrics_(metrics),
        stub_(v1::Cluster::NewStub(grpc::CreateChannel(router, grpc::InsecureChannelCredentials()))) {}

  void Run(std::atomic<bool>& stop) {
    absl::Time next = absl::Now();
    while (!stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      UpdateMetrics();
      if (absl::Now() < next) continue;
      next = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_rebalance_interval_s));
      absl::Status status = Once();
      if (!status.ok()) spdlog::warn("balancer: {}", status.ToString());
    }
  }

 private:
  absl::StatusOr<v1::ClusterState> State() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ClusterState state;
    grpc::Status status = stub_->GetClusterState(&context, {}, &state);
    if (!status.ok()) return FromGrpcStatus(status);
    return state;
  }

  void UpdateMetrics() {
    const LoadSnapshot s = window_.Snapshot(absl::Now());
    metrics_.placement_version.Set(static_cast<double>(s.placement_version));
    int ranks = 0;
    for (const auto& [rank, v] : s.rank_placement_version) ranks = std::max(ranks, static_cast<int>(rank) + 1);
    for (const auto& [layer, per_rank] : s.rank_load) {
      metrics_.layer_imbalance.Add({{"layer", std::to_string(layer)}}).Set(Imbalance(per_rank, ranks));
    }
    metrics_.imbalance.Set(StepImbalance(s.rank_load, ranks));
    if (absl::GetFlag(FLAGS_per_expert_metrics)) {
      for (const auto& [layer, loads] : s.expert_load) {
        for (size_t e = 0; e < loads.size(); ++e) {
          metrics_.expert_tokens.Add({{"layer", std::to_string(layer)}, {"expert", std::to_string(e)}})
              .Set(loads[e]);
        }
      }
    }
    // A rebalance is done when every rank reports the proposed version.
    if (pending_version_ != 0 && !s.rank_placement_version.empty()) {
      bool all = static_cast<int>(s.rank_placement_version.size()) >= pending_ranks_;
      for (const auto& [rank, v] : s.rank_placement_version) all = all && v >= pending_version_;
      if (all) {
        metrics_.rebalance_seconds.Observe(absl::ToDoubleSeconds(absl::Now() - pending_since_));
        spdlog::info("placement {} running on every rank after {}", pending_version_,
                     absl::FormatDuration(absl::Now() - pending_since_));
        pending_version_ = 0;
      }
    }
  }

  absl::Status Once() {
    absl::StatusOr<v1::ClusterState> state = State();
    if (!state.ok()) return state.status();
    int alive = 0;
    for (const v1::GroupMember& m : state->members()) alive += m.alive() ? 1 : 0;
    metrics_.live_ranks.Set(alive);
    if (state->world_size() == 0 || !state->has_placement() || state->placement().layers_size() == 0) {
      return absl::OkStatus();
    }
    const v1::ModelIdentity& model = state->model();
    std::vector<bool> moe(model.num_hidden_layers(), false);
    for (const v1::LayerPlacement& l : state->placement().layers()) {
      if (l.layer() < moe.size()) moe[l.layer()] = true;
    }
    absl::StatusOr<ExpertPlacement> current = PlacementFromProto(
        state->placement(), model.num_hidden_layers(), moe,
        static_cast<int32_t>(model.n_routed_experts()));
    if (!current.ok()) return current.status();
    const LoadSnapshot load = window_.Snapshot(absl::Now());
    SetBudgets(load, static_cast<int>(state->world_size()));
    if (pending_version_ != 0) return absl::OkStatus();  // the last rollout is still going
    RebalancePolicy policy;
    policy.imbalance_threshold = absl::GetFlag(FLAGS_imbalance_threshold);
    policy.min_window_tokens = absl::GetFlag(FLAGS_min_window_tokens);
    policy.num_nodes = absl::GetFlag(FLAGS_eplb_num_nodes);
    policy.num_groups = absl::GetFlag(FLAGS_eplb_num_groups);
    const absl::Time start = absl::Now();
    std::optional<RebalanceProposal> proposal = ProposeRebalance(load, *current, policy);
    if (!proposal) return absl::OkStatus();
    v1::ProposePlacementRequest request;
    request.set_base_version(current->version);
    PlacementToProto(proposal->placement, static_cast<int32_t>(model.n_routed_experts()),
                     request.mutable_placement());
    request.set_imbalance_before(proposal->imbalance_before);
    request.set_imbalance_after(proposal->imbalance_after);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ProposePlacementResponse response;
    grpc::Status status = stub_->ProposePlacement(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    metrics_.rebalances.Increment();
    metrics_.rebalance_imbalance.Add({{"when", "before"}}).Set(proposal->imbalance_before);
    metrics_.rebalance_imbalance.Add({{"when", "after"}}).Set(proposal->imbalance_after);
    pending_version_ = response.version();
    pending_ranks_ = static_cast<int>(state->world_size());
    pending_since_ = start;
    spdlog::info("proposed placement {}: worst layer max/mean {:.3f} measured → {:.3f} predicted",
                 response.version(), proposal->imbalance_before, proposal->imbalance_after);
    return absl::OkStatus();
  }

  // Cross-node batch scaling: split the group's step budget by each rank's measured compute
  // speed, so that ranks finish their part of a step together.
  void SetBudgets(const LoadSnapshot& load, int world) {
    if (static_cast<int>(load.rank_tokens_per_second.size()) != world || world < 2) return;
    double total_speed = 0;
    for (const auto& [rank, speed] : load.rank_tokens_per_second) total_speed += speed;
    if (total_speed <= 0) return;
    const double group_budget = static_cast<double>(absl::GetFlag(FLAGS_base_tokens_per_step)) * world;
    v1::SetBatchBudgetsRequest request;
    for (const auto& [rank, speed] : load.rank_tokens_per_second) {
      const int64_t tokens = std::clamp<int64_t>(
          static_cast<int64_t>(group_budget * speed / total_speed), 16, 65536);
      v1::BatchBudget* b = request.add_budgets();
      b->set_rank(rank);
      b->set_max_tokens_per_step(static_cast<uint32_t>(tokens));
      b->set_prefill_chunk_tokens(static_cast<uint32_t>(std::max<int64_t>(1, tokens / 2)));
      metrics_.budget.Add({{"rank", std::to_string(rank)}}).Set(static_cast<double>(tokens));
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::SetBatchBudgetsResponse response;
    grpc::Status status = stub_->SetBatchBudgets(&context, request, &response);
    if (!status.ok()) spdlog::warn("batch budgets: {}", status.error_message());
  }

  LoadWindow& window_;
  SchedulerMetrics& metrics_;
  std::unique_ptr<v1::Cluster::Stub> stub_;
  uint64_t pending_version_ = 0;
  int pending_ranks_ = 0;
  absl::Time pending_since_;
};

}  // namespace

int RunScheduler(int argc, char** argv) {
  ServerProcess process(
      "scheduler", argc, argv, "--router HOST:PORT [flags]",
      ServerFlagNames({"router", "rebalance_interval_s", "imbalance_threshold", "window_s",
                       "min_window_tokens", "eplb_num_nodes", "eplb_num_groups",
                       "base_tokens_per_step", "per_expert_metrics"}));
  absl::StatusOr<ServerAddresses> addresses = ResolveServerFlags(50071, 9402);
  process.CheckFlag(addresses.status());
  if (absl::GetFlag(FLAGS_rebalance_interval_s) < 1 || absl::GetFlag(FLAGS_window_s) < 1 ||
      absl::GetFlag(FLAGS_imbalance_threshold) < 1.0 || absl::GetFlag(FLAGS_eplb_num_nodes) < 1 ||
      absl::GetFlag(FLAGS_eplb_num_groups) < 1 || absl::GetFlag(FLAGS_base_tokens_per_step) < 1) {
    process.CheckFlag(absl::InvalidArgumentError(
        "--rebalance_interval_s, --window_s, --eplb_num_nodes, --eplb_num_groups and "
        "--base_tokens_per_step must be >= 1, --imbalance_threshold >= 1.0"));
  }
  LoadWindow window(absl::Seconds(absl::GetFlag(FLAGS_window_s)));
  SchedulerService scheduler(window);
  process.CheckStartup(process.StartMetrics(addresses->metrics));
  SchedulerMetrics metrics(process.metrics().registry());
  process.CheckStartup(process.Serve("grpc", addresses->grpc, {&scheduler}).status());
  std::atomic<bool> stop{false};
  std::thread balancer;
  if (const std::string router = absl::GetFlag(FLAGS_router); !router.empty()) {
    balancer = std::thread([&window, &metrics, router, &stop] {
      Balancer(window, metrics, router).Run(stop);
    });
  }
  const int code = process.Run(addresses->drain, [&] { stop = true; });
  stop = true;
  if (balancer.joinable()) balancer.join();
  return code;
}

}  // namespace epinfer
