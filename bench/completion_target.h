#ifndef EPINFER_BENCH_COMPLETION_TARGET_H_
#define EPINFER_BENCH_COMPLETION_TARGET_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/load_generator.h"

namespace epinfer {

struct TargetOptions {
  std::string address;  // host:port
  // false: a router's public epinfer.v1.Completions (Generate); true: straight to one worker's
  // epinfer.v1.Worker (Submit), bypassing the router, to measure what the router adds.
  bool direct = false;
  float temperature = 0;  // 0: greedy; otherwise sampled with seed = `seed` + request index
  uint64_t seed = 0;
  std::string api_key;  // router only: sent as authorization: Bearer <key>
};

// A gRPC CompletionTarget. Every request streams with ignore_eos; chunks are timed as they
// arrive.
class GrpcCompletionTarget : public CompletionTarget {
  struct Stubs;
  struct PrivateTag {};  // Connect() is the only way to make one

 public:
  // Connects (bounded by `deadline`) and reads the model's vocabulary size (ListModels from a
  // router, Info from a worker).
  static absl::StatusOr<std::unique_ptr<GrpcCompletionTarget>> Connect(const TargetOptions& options,
                                                                      absl::Time deadline);
  GrpcCompletionTarget(PrivateTag, TargetOptions options, std::unique_ptr<Stubs> stubs);
  ~GrpcCompletionTarget() override;

  int64_t vocab_size() const { return vocab_size_; }
  // "router 127.0.0.1:50051 (Completions.Generate)" or "worker … (Worker.Submit, no router)".
  std::string description() const;

  RequestRecord Send(const BenchRequest& request, int64_t index, absl::Time deadline) override;

 private:
  TargetOptions options_;
  std::unique_ptr<Stubs> stubs_;
  int64_t vocab_size_ = 0;
  std::string run_id_;  // makes worker request ids unique across runs
};

}  // namespace epinfer

#endif  // EPINFER_BENCH_COMPLETION_TARGET_H_
