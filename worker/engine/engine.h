#ifndef EPINFER_WORKER_ENGINE_ENGINE_H_
#define EPINFER_WORKER_ENGINE_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/model.h"
#include "worker/model/sampler.h"

namespace epinfer {

// One sequence to generate, already tokenized and templated.
struct SequenceRequest {
  std::string id;
  std::vector<int32_t> prompt;
  SamplingOptions sampling;
  int64_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;
  std::vector<int32_t> eos_token_ids;
  bool ignore_eos = false;
};

enum class SequenceFinish { kLength, kEos, kStop, kCancelled };

// What the engine reports for a sequence: new tokens, then once a finish (or an error).
struct SequenceEvent {
  std::vector<SampledToken> tokens;
  std::optional<SequenceFinish> finish;
  std::optional<int32_t> matched_stop_token;
  absl::Status error;  // not OK: the sequence ended abnormally (the event is its last)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// Called on the engine's step thread; must not block.
using SequenceSink = std::function<void(SequenceEvent)>;

struct EngineOptions {
  // Tokens (decode + prefill) this rank computes per step, and the largest prefill chunk of one
  // sequence per step (chunked prefill mixes with decode).
  int64_t max_tokens_per_step = 512;
  int64_t prefill_chunk_tokens = 256;
  int64_t max_running_sequences = 256;
  ForwardOptions forward;
  // When no rank of the group has work, wait this long before the next (empty) step.
  absl::Duration idle_wait = absl::Milliseconds(2);
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  int64_t outstanding_tokens = 0;  // prompt + still-to-generate tokens of live sequences
};

// What one Step did, for metrics and telemetry.
struct StepReport {
  int64_t local_tokens = 0;   // tokens this rank computed
  int64_t global_tokens = 0;  // over the whole group
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  bool stop = false;          // every rank asked to stop: the group ends together
  uint64_t switched_to = 0;   // non-zero: this step switched to that placement version
  absl::Duration duration;
  ForwardStats forward;
};

// Continuous batching on one EP rank. Requests arrive at any time (Submit/Cancel are
// thread-safe); one thread calls Step() in a loop, in lockstep with the other ranks of the
// group: every step starts with an all-gather of each rank's token count and stop flag, then
// every rank runs the forward pass (with zero tokens if it has none), so MoE collectives always
// line up. A step's batch mixes one decode token per running sequence with chunks of prefill,
// within the token budget. A sequence is admitted only when its prompt's KV blocks fit; when
// decode runs out of blocks the newest sequence is preempted and later recomputed. Results do
// not depend on what else is batched.
class Engine {
 public:
  Engine(KvCache cache, const EngineOptions& options);
  ~Engine();

  // The model and group the next steps run on (the group can change between steps: EP re-forms
  // after a failure or a membership change; running sequences keep their KV). `placement_version`
  // is the version of the expert placement `model` holds.
  void Bind(const DeepseekV3Model* model, Communicator* comm, uint64_t placement_version = 0);

  // A model holding the experts of a new placement, loaded in the background. Every step header
  // carries the newest version this rank has staged; once every rank has staged it, all ranks
  // switch to it at the start of the same step (a placement change never splits a step).
  void StagePlacement(const DeepseekV3Model* model, uint64_t version);
  // The placement version the steps run on.
  uint64_t placement_version() const;

  // INVALID_ARGUMENT for an empty prompt, ids outside the vocabulary, bad sampling options,
  // a prompt + max_tokens beyond the context or the KV cache; ALREADY_EXISTS for a live id;
  // UNAVAILABLE while draining.
  absl::Status Submit(SequenceRequest request, SequenceSink sink);
  // Ends a live sequence with kCancelled; its KV blocks are freed at the next step boundary
  // (at once if it was still waiting). False if no live sequence has this id.
  bool Cancel(const std::string& id);
  // Stops admitting new sequences (Submit answers UNAVAILABLE).
  void Drain();
  // The step budget set by the scheduler (cross-node batch scaling); values < 1 keep the current.
  void SetBudget(int64_t max_tokens_per_step, int64_t prefill_chunk_tokens);
  int64_t max_tokens_per_step() const;
  // Asks the group to stop: the flag travels in every step header; once every rank has set it
  // (each after draining its own sequences), every rank's Step reports stop in the same step.
  void RequestStop();

  // One step of the group. Errors (a collective failed, a peer died) leave every sequence as it
  // was before the step, so the step can be retried once the group has re-formed.
  absl::StatusOr<StepReport> Step();

  // Ends every live sequence with `error` (UNAVAILABLE when the group is gone for good).
  void FailAll(const absl::Status& error);

  EngineStats stats() const;
  int64_t vocab_size() const;

 private:
  struct Sequence;

  void AdmitWaiting() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReapCancelled() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Sequence& s, SequenceFinish finish, std::optional<int32_t> stop_token)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Preempt(Sequence& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ValidateRequest(const SequenceRequest& r) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  EngineOptions options_ ABSL_GUARDED_BY(mu_);
  mutable absl::Mutex mu_;
  KvCache cache_ ABSL_GUARDED_BY(mu_);
  const DeepseekV3Model* model_ ABSL_GUARDED_BY(mu_) = nullptr;
  Communicator* comm_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, std::unique_ptr<Sequence>> live_ ABSL_GUARDED_BY(mu_);
  std::deque<Sequence*> waiting_ ABSL_GUARDED_BY(mu_);
  std::vector<Sequence*> running_ ABSL_GUARDED_BY(mu_);  // admission order
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t placement_version_ ABSL_GUARDED_BY(mu_) = 0;
  const DeepseekV3Model* staged_model_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t staged_version_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_ENGINE_ENGINE_H_
