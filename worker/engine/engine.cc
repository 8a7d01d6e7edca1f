#include "worker/engine/engine.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace epinfer {

struct Engine::Sequence {
  Sequence(SequenceRequest r, SequenceSink s, uint64_t o)
      : request(std::move(r)), sink(std::move(s)), sampler(request.sampling),
        tokens(request.prompt), order(o) {}

  SequenceRequest request;
  SequenceSink sink;
  Sampler sampler;
  std::vector<int32_t> tokens;  // prompt + generated; KV holds the first kv.num_tokens
  KvBlockTable kv;
  int64_t generated = 0;
  uint64_t order;
  bool running = false;
  bool cancelled = false;
};

Engine::Engine(KvCache cache, const EngineOptions& options)
    : options_(options), cache_(std::move(cache)) {}

Engine::~Engine() { FailAll(absl::CancelledError("engine shut down")); }

void Engine::Bind(const DeepseekV3Model* model, Communicator* comm, uint64_t placement_version) {
  absl::MutexLock lock(&mu_);
  model_ = model;
  comm_ = comm;
  placement_version_ = placement_version;
  if (staged_version_ <= placement_version) {
    staged_model_ = nullptr;
    staged_version_ = 0;
  }
}

void Engine::StagePlacement(const DeepseekV3Model* model, uint64_t version) {
  absl::MutexLock lock(&mu_);
  if (version <= placement_version_) return;
  staged_model_ = model;
  staged_version_ = version;
}

uint64_t Engine::placement_version() const {
  absl::MutexLock lock(&mu_);
  return placement_version_;
}

int64_t Engine::vocab_size() const {
  absl::MutexLock lock(&mu_);
  return model_ != nullptr ? model_->config().vocab_size : 0;
}

absl::Status Engine::ValidateRequest(const SequenceRequest& r) const {
  if (model_ == nullptr) return absl::UnavailableError("no model loaded yet");
  const ModelConfig& c = model_->config();
  if (r.id.empty() || r.id.size() > 256) {
    return absl::InvalidArgumentError("request_id must be 1..256 bytes");
  }
  if (r.prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt[", i, "] = ", r.prompt[i],
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  if (r.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", r.max_tokens, " < 1"));
  }
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", r.prompt.size(),
                                                   ") + max_tokens (", r.max_tokens,
                                                   ") exceeds the context length ",
                                                   c.max_position_embeddings));
  }
  if (cache_.BlocksFor(total) > cache_.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt + max_tokens = ", total, " tokens exceeds this worker's KV cache of ",
        cache_.num_blocks() * cache_.block_size_tokens(), " tokens"));
  }
  for (int32_t id : r.stop_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids: ", id,
                                                     " is outside the vocabulary"));
    }
  }
  return ValidateSamplingOptions(r.sampling, c.vocab_size);
}

absl::Status Engine::Submit(SequenceRequest request, SequenceSink sink) {
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("worker is draining");
  RETURN_IF_ERROR(ValidateRequest(request));
  if (live_.count(request.id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", request.id, " is already running"));
  }
  const std::string id = request.id;
  auto sequence = std::make_unique<Sequence>(std::move(request), std::move(sink), next_order_++);
  waiting_.push_back(sequence.get());
  live_[id] = std::move(sequence);
  return absl::OkStatus();
}

bool Engine::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(id);
  if (it == live_.end()) return false;
  Sequence& s = *it->second;
  if (!s.running) {
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &s), waiting_.end());
    Finish(s, SequenceFinish::kCancelled, std::nullopt);  // erases s
    return true;
  }
  s.cancelled = true;  // the step thread frees its blocks at the next step boundary
  return true;
}

void Engine::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

void Engine::SetBudget(int64_t max_tokens_per_step, int64_t prefill_chunk_tokens) {
  absl::MutexLock lock(&mu_);
  if (max_tokens_per_step > 0) options_.max_tokens_per_step = max_tokens_per_step;
  if (prefill_chunk_tokens > 0) options_.prefill_chunk_tokens = prefill_chunk_tokens;
}

int64_t Engine::max_tokens_per_step() const {
  absl::MutexLock lock(&mu_);
  return options_.max_tokens_per_step;
}

void Engine::RequestStop() {
  absl::MutexLock lock(&mu_);
  stop_requested_ = true;
}

void Engine::Finish(Sequence& s, SequenceFinish finish, std::optional<int32_t> stop_token) {
  SequenceEvent event;
  event.finish = finish;
  event.matched_stop_token = stop_token;
  event.prompt_tokens = static_cast<int64_t>(s.request.prompt.size());
  event.completion_tokens = s.generated;
  s.sink(std::move(event));
  cache_.Release(s.kv);
  running_.erase(std::remove(running_.begin(), running_.end(), &s), running_.end());
  live_.erase(s.request.id);
}

void Engine::Preempt(Sequence& s) {
  // Recompute later: drop the KV, keep prompt + generated tokens and the sampler's state.
  cache_.Release(s.kv);
  s.running = false;
  running_.erase(std::remove(running_.begin(), running_.end(), &s), running_.end());
  waiting_.push_front(&s);
}

void Engine::ReapCancelled() {
  std::vector<Sequence*> cancelled;
  for (Sequence* s : running_) {
    if (s->cancelled) cancelled.push_back(s);
  }
  for (Sequence* s : cancelled) Finish(*s, SequenceFinish::kCancelled, std::nullopt);
}

void Engine::AdmitWaiting() {
  // First come, first served: a sequence starts only when its tokens' KV blocks fit.
  while (!waiting_.empty() &&
         static_cast<int64_t>(running_.size()) < options_.max_running_sequences) {
    Sequence& s = *waiting_.front();
    if (!cache_.Reserve(s.kv, static_cast<int64_t>(s.tokens.size())).ok()) return;
    waiting_.pop_front();
    s.running = true;
    running_.push_back(&s);
  }
}

absl::StatusOr<StepReport> Engine::Step() {
  const absl::Time start = absl::Now();
  StepReport report;
  struct Planned {
    Sequence* sequence;
    int64_t start;
    int64_t count;
    bool samples;  // this chunk reaches the end of the known tokens: sample the next one
  };
  std::vector<Planned> plan;
  const DeepseekV3Model* model;
  Communicator* comm;
  bool stop_flag;
  uint64_t staged_version;
  {
    absl::MutexLock lock(&mu_);
    if (model_ == nullptr || comm_ == nullptr) {
      return absl::FailedPreconditionError("engine has no model or group bound");
    }
    comm = comm_;
    stop_flag = stop_requested_;
    staged_version = staged_version_;
    ReapCancelled();
    AdmitWaiting();
    // Decode tokens first (one per sequence, oldest first), then prefill chunks, in budget.
    int64_t budget = options_.max_tokens_per_step;
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
        Sequence& s = *running_[i];
        const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.kv.num_tokens;
        const bool decode = remaining == 1;
        if ((pass == 0) != decode || remaining <= 0) continue;
        const int64_t count = std::min({remaining, options_.prefill_chunk_tokens, budget});
        // Grow the KV by what this step writes; out of blocks → preempt the newest sequence.
        while (!cache_.Reserve(s.kv, s.kv.num_tokens + count).ok()) {
          Sequence* newest = running_.back();
          Preempt(*newest);
          for (Planned& p : plan) {
            if (p.sequence == newest) p.count = 0;
          }
          if (newest == &s) break;
        }
        if (!s.running) continue;
        plan.push_back({&s, s.kv.num_tokens, count, count == remaining});
        budget -= count;
      }
    }
    plan.erase(std::remove_if(plan.begin(), plan.end(), [](const Planned& p) { return p.count == 0; }),
               plan.end());
    for (const Planned& p : plan) {
      report.local_tokens += p.count;
      (p.count == 1 && p.samples ? report.decode_tokens : report.prefill_tokens) += p.count;
    }
  }

  // Step header: every rank's token count, stop flag and staged placement version.
  struct Header {
    int64_t tokens;
    int64_t stop;
    uint64_t staged;
  } header{report.local_tokens, stop_flag ? 1 : 0, staged_version};
  std::vector<uint8_t> headers;
  absl::Duration timeout;
  {
    absl::MutexLock lock(&mu_);
    timeout = options_.forward.collective_timeout;
  }
  RETURN_IF_ERROR(comm->AllGather(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&header), sizeof header), &headers,
      absl::Now() + timeout));
  report.stop = !headers.empty();
  uint64_t everyone_staged = UINT64_MAX;
  for (size_t r = 0; r < headers.size() / sizeof(Header); ++r) {
    Header h;
    std::memcpy(&h, headers.data() + r * sizeof(Header), sizeof h);
    report.global_tokens += h.tokens;
    report.stop = report.stop && h.stop != 0;
    everyone_staged = std::min(everyone_staged, h.staged);
  }
  {
    // Every rank has the new experts loaded: switch together, before this step's forward.
    absl::MutexLock lock(&mu_);
    if (staged_model_ != nullptr && everyone_staged >= staged_version_ &&
        staged_version_ > placement_version_) {
      model_ = staged_model_;
      placement_version_ = staged_version_;
      report.switched_to = staged_version_;
      staged_model_ = nullptr;
      staged_version_ = 0;
    }
    model = model_;
  }
  if (report.global_tokens == 0) {
    absl::Duration idle;
    {
      absl::MutexLock lock(&mu_);
      idle = options_.idle_wait;
    }
    if (!report.stop) std::this_thread::sleep_for(absl::ToChronoMicroseconds(idle));
    report.duration = absl::Now() - start;
    return report;
  }

  // Forward: every rank runs it (also with an empty batch) so the MoE collectives line up.
  // KV of planned sequences is only touched by this thread; the lock is not held.
  std::vector<SequenceStep> batch;
  for (const Planned& p : plan) {
    Sequence& s = *p.sequence;
    batch.push_back({absl::Span<const int32_t>(s.tokens.data() + p.start, p.count), p.start,
                     &s.kv, false});
  }
  std::vector<float> logits;
  KvCache* cache;
  ForwardOptions forward_options;
  {
    absl::MutexLock lock(&mu_);
    cache = &cache_;
    forward_options = options_.forward;
  }
  absl::Status forward = model->Forward(batch, *cache, *comm, forward_options, &logits,
                                        &report.forward);
  if (!forward.ok()) {
    // Undo the partial step: KV beyond what was cached before is simply rewritten on retry.
    absl::MutexLock lock(&mu_);
    for (const Planned& p : plan) p.sequence->kv.num_tokens = p.start;
    return forward;
  }

  // Sample where a chunk reached the end, emit, finish.
  absl::MutexLock lock(&mu_);
  const int64_t vocab = model->config().vocab_size;
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence& s = *plan[i].sequence;
    if (!plan[i].samples || s.cancelled) continue;
    SampledToken sample = s.sampler.Next(logits.data() + i * vocab, vocab);
    const int32_t token = sample.token;
    const SequenceRequest& r = s.request;
    if (!r.ignore_eos &&
        std::find(r.eos_token_ids.begin(), r.eos_token_ids.end(), token) != r.eos_token_ids.end()) {
      Finish(s, SequenceFinish::kEos, std::nullopt);
      continue;
    }
    if (std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), token) !=
        r.stop_token_ids.end()) {
      Finish(s, SequenceFinish::kStop, token);
      continue;
    }
    s.tokens.push_back(token);
    ++s.generated;
    SequenceEvent event;
    event.tokens.push_back(std::move(sample));
    s.sink(std::move(event));
    if (s.generated >= r.max_tokens) Finish(s, SequenceFinish::kLength, std::nullopt);
  }
  report.duration = absl::Now() - start;
  return report;
}

void Engine::FailAll(const absl::Status& error) {
  absl::MutexLock lock(&mu_);
  for (auto& [id, s] : live_) {
    SequenceEvent event;
    event.error = error;
    event.prompt_tokens = static_cast<int64_t>(s->request.prompt.size());
    event.completion_tokens = s->generated;
    s->sink(std::move(event));
    cache_.Release(s->kv);
  }
  live_.clear();
  waiting_.clear();
  running_.clear();
}

EngineStats Engine::stats() const {
  absl::MutexLock lock(&mu_);
  EngineStats stats;
  stats.running = static_cast<int64_t>(running_.size());
  stats.waiting = static_cast<int64_t>(waiting_.size());
  stats.kv_blocks_total = cache_.num_blocks();
  stats.kv_blocks_free = cache_.free_blocks();
  for (const auto& [id, s] : live_) {
    stats.outstanding_tokens += static_cast<int64_t>(s->request.prompt.size()) +
                                s->request.max_tokens - s->generated;
  }
  return stats;
}

}  // namespace epinfer
