#ifndef EPINFER_ROUTER_COMPLETIONS_H_
#define EPINFER_ROUTER_COMPLETIONS_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "epinfer/v1/completion.pb.h"
#include "epinfer/v1/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "router/cluster_map.h"
#include "router/router_metrics.h"
#include "router/routing_policy.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "worker/model/config.h"

namespace epinfer {

// The model as the router serves it: limits from config.json, the tokenizer and chat template
// from tokenizer.json / tokenizer_config.json (without them, only token-id prompts work).
struct ServedModel {
  std::string id;
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;

  static absl::StatusOr<std::unique_ptr<ServedModel>> Load(const std::string& dir, std::string id);
};

// Receives a streamed completion's chunks; false = the client is gone (stop generating).
class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  virtual bool Write(const v1::CompletionChunk& chunk) = 0;
};

// The caller's deadline and cancellation: a gRPC server context (propagated to the worker), or
// a deadline and a cancellation probe (HTTP).
struct CallControl {
  grpc::ServerContext* server_context = nullptr;
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;
  // A streaming front end that forwards every chunk needs no assembled copy of the answer.
  bool assemble_response = true;
};

struct CompletionsOptions {
  // Admission: requests beyond this many in flight get RESOURCE_EXHAUSTED.
  int max_concurrent_requests = 256;
  // How long an admitted request waits for a serving EP group before UNAVAILABLE.
  absl::Duration queue_timeout = absl::Seconds(30);
};

// The public API's logic, shared by the gRPC and HTTP front ends: validate, tokenize and apply
// the chat template, admit, pick a DP rank, stream from the worker, detokenize incrementally,
// match stop strings, split R1 reasoning from content.
class Completions {
 public:
  Completions(const ServedModel& model, ClusterMap& cluster, std::unique_ptr<RoutingPolicy> policy,
              RouterMetrics* metrics, CompletionsOptions options);

  // Runs one request: every chunk goes to `stream` (may be null), and unless
  // call.assemble_response is false the whole answer is assembled into `response`. The status is
  // what the client gets.
  absl::Status Run(const v1::CompletionRequest& request, const CallControl& call,
                   CompletionSink* stream, v1::CompletionResponse* response);

  void ListModels(v1::ListModelsResponse* response) const;
  const ServedModel& model() const { return model_; }

 private:
  struct Worker {
    std::unique_ptr<v1::Worker::Stub> stub;
    std::atomic<int64_t> outstanding_tokens{0};
  };
  Worker& WorkerFor(const std::string& worker_id, const std::string& address);
  absl::StatusOr<std::vector<int32_t>> Tokenize(const v1::CompletionRequest& request,
                                                bool* opens_reasoning) const;

  const ServedModel& model_;
  ClusterMap& cluster_;
  std::unique_ptr<RoutingPolicy> policy_;
  RouterMetrics* metrics_;
  const CompletionsOptions options_;
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> next_id_{1};
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);  // by address
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_COMPLETIONS_H_
