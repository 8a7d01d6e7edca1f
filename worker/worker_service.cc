#include "worker/worker_service.h"

#include <deque>
#include <memory>
#include <optional>

#include "common/grpc_status.h"

namespace epinfer {
namespace {

// Events of one sequence, from the engine's step thread to the Submit handler.
struct EventQueue {
  absl::Mutex mu;
  std::deque<SequenceEvent> events ABSL_GUARDED_BY(mu);
};

v1::FinishReason ToProto(SequenceFinish finish) {
  switch (finish) {
    case SequenceFinish::kLength:
      return v1::FINISH_REASON_LENGTH;
    case SequenceFinish::kEos:
      return v1::FINISH_REASON_EOS;
    case SequenceFinish::kStop:
      return v1::FINISH_REASON_STOP;
    case SequenceFinish::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

const char* ReasonName(SequenceFinish finish) {
  switch (finish) {
    case SequenceFinish::kLength:
      return "length";
    case SequenceFinish::kEos:
      return "eos";
    case SequenceFinish::kStop:
      return "stop";
    case SequenceFinish::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace

WorkerService::WorkerService(Engine& engine, WorkerIdentity& identity, WorkerMetrics* metrics)
    : engine_(engine), identity_(identity), metrics_(metrics) {}

grpc::Status WorkerService::Submit(grpc::ServerContext* context, const v1::SubmitRequest* request,
                                   grpc::ServerWriter<v1::SubmitEvent>* writer) {
  SequenceRequest r;
  r.id = request->request_id();
  r.prompt.assign(request->prompt_token_ids().begin(), request->prompt_token_ids().end());
  const v1::SamplingParams& p = request->sampling();
  r.max_tokens = p.max_tokens();
  r.sampling.temperature = p.has_temperature() ? p.temperature() : 1.0f;
  r.sampling.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  r.sampling.top_k = static_cast<int32_t>(std::min<uint32_t>(p.top_k(), 1u << 30));
  r.sampling.seed = p.has_seed() ? p.seed() : absl::ToUnixNanos(absl::Now());
  r.sampling.logprobs = p.has_logprobs() ? static_cast<int32_t>(std::min<uint32_t>(p.logprobs(), 1000)) : 0;
  r.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  r.eos_token_ids.assign(request->eos_token_ids().begin(), request->eos_token_ids().end());
  r.ignore_eos = p.ignore_eos();
  const bool want_logprobs = p.has_logprobs();

  auto queue = std::make_shared<EventQueue>();
  absl::Status submitted = engine_.Submit(r, [queue](SequenceEvent event) {
    absl::MutexLock lock(&queue->mu);
    queue->events.push_back(std::move(event));
  });
  if (!submitted.ok()) return ToGrpcStatus(submitted);

  bool cancel_sent = false;
  while (true) {
    std::deque<SequenceEvent> batch;
    {
      absl::MutexLock lock(&queue->mu);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue->mu) { return !queue->events.empty(); };
      queue->mu.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(50));
      batch.swap(queue->events);
    }
    // Everything queued since the last wake-up travels as one message: one Write per batch of
    // tokens, not per token.
    v1::SubmitEvent tokens_out;
    v1::TokenEvent* tokens = tokens_out.mutable_tokens();
    std::optional<SequenceEvent> finished;
    for (SequenceEvent& event : batch) {
      if (!event.error.ok()) {
        if (metrics_) metrics_->RecordFinish("error");
        return ToGrpcStatus(event.error);
      }
      for (const SampledToken& t : event.tokens) {
        tokens->add_token_ids(static_cast<uint32_t>(t.token));
        if (want_logprobs) {
          v1::TokenLogprob* lp = tokens->add_logprobs();
          lp->set_token_id(static_cast<uint32_t>(t.token));
          lp->set_logprob(t.logprob);
          for (const auto& [id, logprob] : t.top) {
            v1::TopLogprob* top = lp->add_top();
            top->set_token_id(static_cast<uint32_t>(id));
            top->set_logprob(logprob);
          }
        }
      }
      if (event.finish) {
        finished = std::move(event);
        break;
      }
    }
    if (tokens->token_ids_size() > 0 && !cancel_sent && !writer->Write(tokens_out)) {
      engine_.Cancel(r.id);  // the caller is gone
      cancel_sent = true;
    }
    if (finished) {
      const SequenceEvent& event = *finished;
      if (metrics_) metrics_->RecordFinish(ReasonName(*event.finish));
      if (*event.finish == SequenceFinish::kCancelled && context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the caller");
      }
      v1::SubmitEvent out;
      v1::FinishEvent* finish = out.mutable_finish();
      finish->set_reason(ToProto(*event.finish));
      finish->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(event.prompt_tokens));
      finish->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(event.completion_tokens));
      if (event.matched_stop_token) finish->set_matched_stop_token_id(*event.matched_stop_token);
      writer->Write(out);
      return grpc::Status::OK;
    }
    // The caller cancelled or its deadline passed: cancel the sequence (frees its KV blocks at
    // the next step) and wait for the engine's confirmation.
    if (context->IsCancelled() && !cancel_sent) {
      engine_.Cancel(r.id);
      cancel_sent = true;
    }
  }
}

grpc::Status WorkerService::Cancel(grpc::ServerContext*, const v1::CancelRequest* request,
                                   v1::CancelResponse* response) {
  response->set_cancelled(engine_.Cancel(request->request_id()));
  return grpc::Status::OK;
}

grpc::Status WorkerService::Drain(grpc::ServerContext* context, const v1::DrainRequest*,
                                  v1::DrainResponse* response) {
  engine_.Drain();
  {
    absl::MutexLock lock(&identity_.mu);
    identity_.draining = true;
  }
  while (!context->IsCancelled()) {
    const EngineStats stats = engine_.stats();
    if (stats.running + stats.waiting == 0) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  const EngineStats stats = engine_.stats();
  response->set_remaining(static_cast<uint32_t>(stats.running + stats.waiting));
  return grpc::Status::OK;
}

grpc::Status WorkerService::Info(grpc::ServerContext*, const v1::InfoRequest*,
                                 v1::InfoResponse* response) {
  const EngineStats stats = engine_.stats();
  response->set_model(identity_.model);
  response->set_context_length(static_cast<uint32_t>(identity_.context_length));
  response->set_vocab_size(static_cast<uint32_t>(identity_.vocab_size));
  {
    absl::MutexLock lock(&identity_.mu);
    response->set_rank(static_cast<uint32_t>(identity_.rank));
    response->set_world_size(static_cast<uint32_t>(identity_.world_size));
    response->set_epoch(identity_.epoch);
    response->set_placement_version(identity_.placement_version);
    response->set_expert_slots(static_cast<uint32_t>(identity_.expert_slots));
    response->set_draining(identity_.draining);
  }
  v1::KvCacheInfo* kv = response->mutable_kv_cache();
  kv->set_block_size_tokens(static_cast<uint32_t>(identity_.block_size_tokens));
  kv->set_blocks_total(static_cast<uint32_t>(stats.kv_blocks_total));
  kv->set_blocks_free(static_cast<uint32_t>(stats.kv_blocks_free));
  kv->set_bytes_per_token(static_cast<uint64_t>(identity_.bytes_per_token));
  response->set_running_sequences(static_cast<uint32_t>(stats.running));
  response->set_waiting_sequences(static_cast<uint32_t>(stats.waiting));
  return grpc::Status::OK;
}

}  // namespace epinfer
