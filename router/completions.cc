#include "router/completions.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "router/stop_matcher.h"
#include "router/validation.h"
#include "tokenizer/reasoning.h"
#include "tokenizer/stream_decoder.h"

namespace epinfer {

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Load(const std::string& dir,
                                                               std::string id) {
  namespace fs = std::filesystem;
  auto model = std::make_unique<ServedModel>();
  model->id = std::move(id);
  ASSIGN_OR_RETURN(model->config, LoadModelConfig((fs::path(dir) / "config.json").string()));
  if (fs::exists(fs::path(dir) / "tokenizer.json")) {
    ASSIGN_OR_RETURN(model->tokenizer, Tokenizer::Load(dir));
    if (!model->tokenizer->config().chat_template.empty()) {
      ASSIGN_OR_RETURN(ChatTemplate chat, ChatTemplate::ForTokenizer(*model->tokenizer));
      model->chat_template = std::move(chat);
    }
  }
  return model;
}

Completions::Completions(const ServedModel& model, ClusterMap& cluster,
                         std::unique_ptr<RoutingPolicy> policy, RouterMetrics* metrics,
                         CompletionsOptions options)
    : model_(model), cluster_(cluster), policy_(std::move(policy)), metrics_(metrics),
      options_(options) {}

Completions::Worker& Completions::WorkerFor(const std::string& worker_id,
                                            const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Worker>& w = workers_[address];
  if (w == nullptr) {
    w = std::make_unique<Worker>();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    w->stub = v1::Worker::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  return *w;
}

absl::StatusOr<std::vector<int32_t>> Completions::Tokenize(const v1::CompletionRequest& r,
                                                           bool* opens_reasoning) const {
  const size_t limit = static_cast<size_t>(model_.config.max_position_embeddings);
  *opens_reasoning = false;
  switch (r.prompt_case()) {
    case v1::CompletionRequest::kTokens:
      return std::vector<int32_t>(r.tokens().ids().begin(), r.tokens().ids().end());
    case v1::CompletionRequest::kText: {
      if (model_.tokenizer == nullptr) {
        return absl::FailedPreconditionError("this model has no tokenizer.json: send token ids");
      }
      EncodeOptions options;
      options.add_special_tokens = true;  // BOS, as the tokenizer's post-processor says
      options.max_tokens = limit;
      absl::StatusOr<std::vector<int32_t>> ids = model_.tokenizer->Encode(r.text(), options);
      if (!ids.ok()) {
        return absl::Status(ids.status().code(), absl::StrCat("text: ", ids.status().message()));
      }
      return ids;
    }
    case v1::CompletionRequest::kChat: {
      if (!model_.chat_template) {
        return absl::FailedPreconditionError("this model has no chat template");
      }
      std::vector<ChatMessage> messages;
      for (const v1::ChatMessage& m : r.chat().messages()) {
        messages.push_back({m.role(), m.content(), {}});
      }
      ChatOptions options;
      options.continue_final_message = messages.back().role == "assistant";
      options.add_generation_prompt = !options.continue_final_message;
      *opens_reasoning = model_.chat_template->opens_reasoning() && options.add_generation_prompt;
      absl::StatusOr<std::vector<int32_t>> ids =
          model_.chat_template->Encode(*model_.tokenizer, messages, options, limit);
      if (!ids.ok()) {
        return absl::Status(ids.status().code(),
                            absl::StrCat("chat.messages: ", ids.status().message()));
      }
      return ids;
    }
    default:
      return absl::InvalidArgumentError("prompt: missing");
  }
}

void Completions::ListModels(v1::ListModelsResponse* response) const {
  v1::ModelInfo* info = response->add_models();
  info->set_id(model_.id);
  info->set_context_length(static_cast<uint32_t>(model_.config.max_position_embeddings));
  info->set_vocab_size(static_cast<uint32_t>(model_.config.vocab_size));
  info->set_architecture(model_.config.model_type);
  info->set_reasoning(model_.chat_template && model_.chat_template->opens_reasoning());
  if (std::optional<GroupView> group = cluster_.ServingGroup()) {
    info->set_num_ranks(static_cast<uint32_t>(group->members.size()));
  }
}

namespace {

// Decrements a counter when the request leaves a stage.
class Scoped {
 public:
  Scoped(std::atomic<int64_t>& counter, int64_t amount) : counter_(counter), amount_(amount) {
    counter_ += amount_;
  }
  ~Scoped() { counter_ -= amount_; }

 private:
  std::atomic<int64_t>& counter_;
  int64_t amount_;
};

}  // namespace

absl::Status Completions::Run(const v1::CompletionRequest& request, const CallControl& call,
                              CompletionSink* stream, v1::CompletionResponse* response) {
  const absl::Time start = absl::Now();
  const ModelLimits limits{model_.config.vocab_size, model_.config.max_position_embeddings};
  if (!request.model().empty() && request.model() != model_.id) {
    return absl::NotFoundError(absl::StrCat("model: \"", request.model(),
                                            "\" is not served here (", model_.id, " is)"));
  }
  RETURN_IF_ERROR(ValidateCompletionRequest(request, limits));
  // Admission control: a bounded number of requests in flight.
  if (in_flight_.fetch_add(1) >= options_.max_concurrent_requests) {
    in_flight_.fetch_sub(1);
    return absl::ResourceExhaustedError(absl::StrCat(
        "server busy: ", options_.max_concurrent_requests, " requests in flight; retry later"));
  }
  struct Release {
    std::atomic<int>& n;
    ~Release() { n.fetch_sub(1); }
  } release{in_flight_};

  bool opens_reasoning = false;
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, Tokenize(request, &opens_reasoning));
  ASSIGN_OR_RETURN(int64_t max_tokens,
                   ResolveMaxTokens(request, static_cast<int64_t>(prompt.size()), limits));
  const std::string id = request.request_id().empty()
                             ? absl::StrCat("req-", absl::ToUnixMicros(start), "-", next_id_++)
                             : request.request_id();

  // Wait (bounded) for a serving EP group, then pick a DP rank.
  const absl::Time queue_until = std::min(call.deadline, start + options_.queue_timeout);
  std::optional<GroupView> group;
  if (metrics_) metrics_->queued().Increment();
  while (!(group = cluster_.ServingGroup())) {
    const bool cancelled = (call.server_context && call.server_context->IsCancelled()) ||
                           (call.cancelled && call.cancelled());
    if (cancelled || absl::Now() >= queue_until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (metrics_) metrics_->queued().Decrement();
  if (!group) {
    if (absl::Now() >= call.deadline) return absl::DeadlineExceededError("deadline passed in queue");
    return absl::UnavailableError("no EP group is serving (workers down or re-forming); retry");
  }
  std::vector<RankCandidate> candidates;
  for (const GroupMemberView& m : group->members) {
    RankCandidate c;
    c.rank = m.rank;
    c.worker_id = m.info.worker_id;
    c.outstanding_tokens =
        WorkerFor(m.info.worker_id, absl::StrCat(m.info.host, ":", m.info.port)).outstanding_tokens;
    c.running = m.load.running;
    c.waiting = m.load.waiting;
    c.kv_blocks_free = m.load.kv_blocks_free;
    candidates.push_back(c);
  }
  const GroupMemberView& chosen = group->members[policy_->Pick(candidates)];
  if (metrics_) {
    metrics_->Routed(policy_->name(), chosen.rank);
    metrics_->live_workers().Set(static_cast<double>(group->members.size()));
    metrics_->epoch().Set(static_cast<double>(group->epoch));
  }
  Worker& worker = WorkerFor(chosen.info.worker_id, absl::StrCat(chosen.info.host, ":", chosen.info.port));
  Scoped outstanding(worker.outstanding_tokens, static_cast<int64_t>(prompt.size()) + max_tokens);

  v1::SubmitRequest submit;
  submit.set_request_id(id);
  for (int32_t t : prompt) submit.add_prompt_token_ids(static_cast<uint32_t>(t));
  *submit.mutable_sampling() = request.sampling();
  submit.mutable_sampling()->set_max_tokens(static_cast<uint32_t>(max_tokens));
  submit.mutable_sampling()->clear_stop();  // stop strings are matched here
  for (int64_t eos : model_.config.eos_token_ids) submit.add_eos_token_ids(static_cast<uint32_t>(eos));
  if (model_.tokenizer && model_.tokenizer->eos_id() &&
      std::find(model_.config.eos_token_ids.begin(), model_.config.eos_token_ids.end(),
                *model_.tokenizer->eos_id()) == model_.config.eos_token_ids.end()) {
    submit.add_eos_token_ids(static_cast<uint32_t>(*model_.tokenizer->eos_id()));
  }
  submit.set_admitted_unix_us(absl::ToUnixMicros(start));

  std::unique_ptr<grpc::ClientContext> context =
      call.server_context ? grpc::ClientContext::FromServerContext(*call.server_context)
                          : std::make_unique<grpc::ClientContext>();
  if (!call.server_context && call.deadline != absl::InfiniteFuture()) {
    context->set_deadline(absl::ToChronoTime(call.deadline));
  }
  std::unique_ptr<grpc::ClientReader<v1::SubmitEvent>> reader =
      worker.stub->Submit(context.get(), submit);

  response->set_request_id(id);
  response->set_model(model_.id);
  std::optional<StreamDecoder> decoder;
  if (model_.tokenizer) decoder.emplace(*model_.tokenizer, /*skip_special_tokens=*/true);
  StopMatcher stops(std::vector<std::string>(request.sampling().stop().begin(),
                                             request.sampling().stop().end()));
  std::optional<ReasoningSplitter> reasoning;
  if (request.prompt_case() == v1::CompletionRequest::kChat) reasoning.emplace(opens_reasoning);
  std::optional<absl::Time> last_token;
  bool stopped_here = false;  // a stop string matched, or the client left: we cancelled
  bool client_gone = false;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  usage.set_prompt_tokens(static_cast<uint32_t>(prompt.size()));

  // Sends text through stop matching and the reasoning split, as one chunk.
  auto emit = [&](const std::string& text, const std::vector<uint32_t>& ids,
                  const std::vector<v1::TokenLogprob>& logprobs, bool last) {
    v1::CompletionChunk chunk;
    chunk.set_request_id(id);
    std::string visible = text;
    if (reasoning) {
      ReasoningDelta delta = reasoning->Push(visible);
      if (last) {
        ReasoningDelta rest = reasoning->Finish();
        delta.reasoning += rest.reasoning;
        delta.content += rest.content;
      }
      chunk.set_reasoning_content(delta.reasoning);
      chunk.set_text(delta.content);
    } else {
      chunk.set_text(visible);
    }
    for (uint32_t t : ids) chunk.add_token_ids(t);
    for (const auto& lp : logprobs) *chunk.add_logprobs() = lp;
    if (call.assemble_response) {
      response->mutable_text()->append(chunk.text());
      response->mutable_reasoning_content()->append(chunk.reasoning_content());
      for (uint32_t t : ids) response->add_token_ids(t);
      for (const auto& lp : logprobs) *response->add_logprobs() = lp;
    }
    if (last) {
      chunk.set_finish_reason(finish);
      *chunk.mutable_usage() = usage;
      chunk.set_matched_stop(response->matched_stop());
    }
    if (stream && !stream->Write(chunk)) client_gone = true;
  };

  v1::SubmitEvent event;
  while (!stopped_here && reader->Read(&event)) {
    if (event.has_tokens()) {
      const v1::TokenEvent& tokens = event.tokens();
      // Token by token: a stop string ends the answer at the token that completes it, however
      // many tokens the worker sent in one message.
      std::string text;
      std::vector<uint32_t> ids;
      std::vector<v1::TokenLogprob> logprobs;
      for (int i = 0; i < tokens.token_ids_size() && !stopped_here; ++i) {
        const int32_t token = static_cast<int32_t>(tokens.token_ids(i));
        const absl::Time now = absl::Now();
        if (metrics_) {
          if (last_token) {
            metrics_->InterTokenLatency(absl::ToDoubleSeconds(now - *last_token));
          } else {
            metrics_->TimeToFirstToken(absl::ToDoubleSeconds(now - start));
          }
        }
        last_token = now;
        ids.push_back(static_cast<uint32_t>(token));
        if (i < tokens.logprobs_size()) {
          v1::TokenLogprob lp = tokens.logprobs(i);
          if (model_.tokenizer) {
            lp.set_token(model_.tokenizer->Decode({&token, 1}).value_or(""));
            for (v1::TopLogprob& top : *lp.mutable_top()) {
              const int32_t alt = static_cast<int32_t>(top.token_id());
              top.set_token(model_.tokenizer->Decode({&alt, 1}).value_or(""));
            }
          }
          logprobs.push_back(std::move(lp));
        }
        std::string piece;
        if (decoder) piece = decoder->Push(token).value_or("");
        StopMatcher::Result matched = stops.Push(piece);
        text += matched.emit;
        if (matched.matched) {
          finish = v1::FINISH_REASON_STOP;
          response->set_matched_stop(*matched.matched);
          stopped_here = true;
          context->TryCancel();  // the worker frees the sequence
        }
      }
      usage.set_completion_tokens(usage.completion_tokens() + static_cast<uint32_t>(ids.size()));
      emit(text, ids, logprobs, false);
      if (client_gone) {
        stopped_here = true;
        context->TryCancel();
      }
    } else if (event.has_finish()) {
      finish = event.finish().reason();
      if (event.finish().has_matched_stop_token_id()) {
        response->set_matched_stop(absl::StrCat("token ", event.finish().matched_stop_token_id()));
      }
    }
  }
  grpc::Status status = reader->Finish();
  if (client_gone) return absl::CancelledError("the client went away");
  if (!stopped_here && !status.ok()) {
    absl::Status error = FromGrpcStatus(status);
    if (error.code() == absl::StatusCode::kUnavailable) {
      error = absl::UnavailableError(absl::StrCat("worker ", chosen.info.worker_id,
                                                  " failed mid-request: ", status.error_message()));
    }
    return error;
  }
  // Release what detokenization and stop matching held back.
  std::string tail = decoder && finish != v1::FINISH_REASON_STOP ? decoder->Finish() : "";
  StopMatcher::Result last = stops.Push(tail);
  if (last.matched) {
    finish = v1::FINISH_REASON_STOP;
    response->set_matched_stop(*last.matched);
  }
  std::string rest = last.emit + stops.Finish();
  response->set_finish_reason(finish);
  emit(rest, {}, {}, true);
  *response->mutable_usage() = usage;
  if (client_gone) return absl::CancelledError("the client went away");
  if (metrics_) {
    metrics_->PromptTokens(usage.prompt_tokens());
    metrics_->GenerationTokens(usage.completion_tokens());
    metrics_->EndToEnd(absl::ToDoubleSeconds(absl::Now() - start));
  }
  return absl::OkStatus();
}

}  // namespace epinfer
