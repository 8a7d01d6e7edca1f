#include "router/router_main.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/server_flags.h"
#include "common/server_process.h"
#include "router/cluster_service.h"
#include "router/completions.h"
#include "router/completions_service.h"
#include "router/openai_http.h"
#include "router/router_metrics.h"
#include "router/routing_policy.h"
#include "spdlog/spdlog.h"
#include "worker/flags.h"

ABSL_FLAG(int, cluster_port, 50052,
          "Port of the internal epinfer.v1.Cluster service (workers register here), on "
          "--internal_bind. 0 picks a free port.");
ABSL_FLAG(int, workers, 1, "EP group size to form (workers expected to register).");
ABSL_FLAG(std::string, model_name, "", "Model id in the API; default: the --model directory name.");
ABSL_FLAG(std::string, routing_policy, "least_loaded",
          "How a request's DP rank is chosen: least_loaded or round_robin.");
ABSL_FLAG(int, max_concurrent_requests, 256,
          "Requests in flight before new ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, queue_timeout_s, 30,
          "How long a request waits for a serving EP group before UNAVAILABLE.");
ABSL_FLAG(int, heartbeat_interval_ms, 500,
          "Worker heartbeat period; a worker silent for 3 periods is dead.");
ABSL_FLAG(int, group_settle_ms, 2000,
          "How long to wait for missing workers before forming a smaller EP group.");
ABSL_FLAG(int, redundant_slots_per_rank, 0,
          "Expert slots per rank beyond ceil(experts / ranks), for replicas of hot experts "
          "(EPLB's redundant experts).");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TLS on the public gRPC port.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: when set, clients must present a certificate it signed (mTLS).");
ABSL_FLAG(std::string, api_key_file, "",
          "File holding the API key clients must send (authorization: Bearer <key>).");
ABSL_FLAG(int, http_port, -1,
          "Port of the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
          "/v1/models) on --bind; -1: off, 0 picks a free port.");
ABSL_FLAG(int, http_timeout_s, 600,
          "Deadline of each HTTP API request (the OpenAI API carries none of its own).");

namespace epinfer {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> PublicCredentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() && key.empty() && ca.empty()) return grpc::InsecureServerCredentials();
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  grpc::SslServerCredentialsOptions options(
      ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                 : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  absl::StatusOr<std::string> cert_pem = ReadFile(cert, "tls_cert");
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadFile(key, "tls_key");
  if (!key_pem.ok()) return key_pem.status();
  pair.cert_chain = *cert_pem;
  pair.private_key = *key_pem;
  options.pem_key_cert_pairs.push_back(pair);
  if (!ca.empty()) {
    absl::StatusOr<std::string> ca_pem = ReadFile(ca, "tls_client_ca");
    if (!ca_pem.ok()) return ca_pem.status();
    options.pem_root_certs = *ca_pem;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace

int RunRouter(int argc, char** argv) {
  ServerProcess process(
      "router", argc, argv, "--model DIR --workers N [flags]",
      ServerFlagNames({"cluster_port", "model", "workers", "model_name", "routing_policy",
                       "max_concurrent_requests", "queue_timeout_s", "heartbeat_interval_ms",
                       "group_settle_ms", "redundant_slots_per_rank", "tls_cert", "tls_key",
                       "tls_client_ca",
                       "api_key_file", "http_port", "http_timeout_s"}));
  absl::StatusOr<ServerAddresses> addresses = ResolveServerFlags(50051, 9400);
  process.CheckFlag(addresses.status());
  absl::StatusOr<std::string> cluster_address =
      ListenAddress(addresses->internal, absl::GetFlag(FLAGS_cluster_port), "cluster_port");
  process.CheckFlag(cluster_address.status());
  const int http_port = absl::GetFlag(FLAGS_http_port);
  std::string http_address;
  if (http_port != -1) {
    absl::StatusOr<std::string> address =
        ListenAddress(HostOf(addresses->grpc), http_port, "http_port");
    process.CheckFlag(address.status());
    http_address = *address;
  }
  if (absl::GetFlag(FLAGS_http_timeout_s) < 1) {
    process.CheckFlag(absl::InvalidArgumentError("--http_timeout_s must be >= 1"));
  }
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) process.CheckFlag(absl::InvalidArgumentError("--model is required"));
  const int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 1 || workers > 4096) {
    process.CheckFlag(absl::InvalidArgumentError("--workers must be in 1..4096"));
  }
  if (absl::GetFlag(FLAGS_max_concurrent_requests) < 1 || absl::GetFlag(FLAGS_queue_timeout_s) < 0 ||
      absl::GetFlag(FLAGS_heartbeat_interval_ms) < 10 || absl::GetFlag(FLAGS_group_settle_ms) < 0) {
    process.CheckFlag(absl::InvalidArgumentError(
        "--max_concurrent_requests >= 1, --queue_timeout_s >= 0, --heartbeat_interval_ms >= 10, "
        "--group_settle_ms >= 0"));
  }
  absl::StatusOr<std::unique_ptr<RoutingPolicy>> policy =
      MakeRoutingPolicy(absl::GetFlag(FLAGS_routing_policy));
  process.CheckFlag(policy.status());
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = PublicCredentials();
  process.CheckFlag(credentials.status());
  std::string api_key;
  if (const std::string path = absl::GetFlag(FLAGS_api_key_file); !path.empty()) {
    absl::StatusOr<std::string> key = ReadFile(path, "api_key_file");
    process.CheckFlag(key.status());
    api_key = std::string(absl::StripAsciiWhitespace(*key));
    if (api_key.empty()) process.CheckFlag(absl::InvalidArgumentError("--api_key_file is empty"));
  }

  std::string name = absl::GetFlag(FLAGS_model_name);
  if (name.empty()) name = std::filesystem::path(model_dir).lexically_normal().filename().string();
  if (name.empty()) name = std::filesystem::path(model_dir).parent_path().filename().string();
  absl::StatusOr<std::unique_ptr<ServedModel>> model = ServedModel::Load(model_dir, name);
  process.CheckStartup(model.status());

  ClusterMap::Options cluster_options;
  cluster_options.expected_workers = workers;
  cluster_options.heartbeat_interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_interval_ms));
  cluster_options.settle = absl::Milliseconds(absl::GetFlag(FLAGS_group_settle_ms));
  cluster_options.num_layers = (*model)->config.num_hidden_layers;
  for (int64_t l = 0; l < cluster_options.num_layers; ++l) {
    cluster_options.moe_layers.push_back((*model)->config.is_moe_layer(l));
  }
  cluster_options.num_logical_experts = static_cast<int32_t>((*model)->config.n_routed_experts);
  cluster_options.redundant_slots_per_rank = absl::GetFlag(FLAGS_redundant_slots_per_rank);
  if (cluster_options.redundant_slots_per_rank < 0 || cluster_options.redundant_slots_per_rank > 1024) {
    process.CheckFlag(absl::InvalidArgumentError("--redundant_slots_per_rank must be in 0..1024"));
  }
  ClusterMap cluster(cluster_options);

  process.CheckStartup(process.StartMetrics(addresses->metrics));
  RouterMetrics metrics(process.metrics().registry());
  CompletionsOptions completion_options;
  completion_options.max_concurrent_requests = absl::GetFlag(FLAGS_max_concurrent_requests);
  completion_options.queue_timeout = absl::Seconds(absl::GetFlag(FLAGS_queue_timeout_s));
  Completions completions(**model, cluster, *std::move(policy), &metrics, completion_options);
  CompletionsService completions_service(completions, &metrics, api_key);
  ClusterService cluster_service(cluster);
  absl::StatusOr<GrpcServer*> public_server =
      process.Serve("grpc", addresses->grpc, {&completions_service}, *credentials);
  process.CheckStartup(public_server.status());
  process.CheckStartup(process.Serve("cluster", *cluster_address, {&cluster_service}).status());
  std::unique_ptr<OpenAiHttpServer> http;
  if (!http_address.empty()) {
    OpenAiHttpOptions http_options;
    http_options.api_key = api_key;
    http_options.request_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_timeout_s));
    // Enough connections that the admission limit, not the HTTP thread pool, answers a burst.
    http_options.threads = std::min(completion_options.max_concurrent_requests, 1024) + 16;
    absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> started =
        OpenAiHttpServer::Start(http_address, completions, &metrics, http_options);
    process.CheckStartup(started.status());
    http = *std::move(started);
    process.AddEndpoint("http", http_address, http->port(),
                        [&http](absl::Duration drain) { http->Shutdown(drain); });
  }

  // Health: NOT_SERVING only while no worker is alive; set once before the "listening" line, so
  // that a client that waits for it never sees the server's initial SERVING.
  auto serving = [&] { return cluster.LiveWorkers() > 0 || cluster.ServingGroup().has_value(); };
  (*public_server)->SetServing(serving());
  std::atomic<bool> stop{false};
  std::thread health([&] {
    while (!stop.load()) {
      (*public_server)->SetServing(serving());
      if (auto group = cluster.ServingGroup()) {
        metrics.live_workers().Set(static_cast<double>(group->members.size()));
        metrics.epoch().Set(static_cast<double>(group->epoch));
      } else {
        metrics.live_workers().Set(0);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  spdlog::info("router serving {} ({} layers, {} routed experts); expecting {} workers", name,
               (*model)->config.num_hidden_layers, (*model)->config.n_routed_experts, workers);
  const int code = process.Run(addresses->drain, [&] { stop = true; });
  stop = true;
  health.join();
  return code;
}

}  // namespace epinfer
