#include "bench/completion_target.h"

#include <unistd.h>

#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "epinfer/v1/completion.grpc.pb.h"
#include "epinfer/v1/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace epinfer {

struct GrpcCompletionTarget::Stubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Completions::Stub> router;  // set unless direct
  std::unique_ptr<v1::Worker::Stub> worker;       // set when direct
};

namespace {

using Clock = std::chrono::steady_clock;

double SecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Times token-carrying chunks as they arrive.
class ChunkClock {
 public:
  ChunkClock() : start_(Clock::now()) {}

  void Tokens(RequestRecord& record, int count) {
    if (count == 0) return;
    const Clock::time_point now = Clock::now();
    if (!last_) {
      record.ttft_s = SecondsBetween(start_, now);
    } else {
      record.itl_s.push_back(SecondsBetween(*last_, now));
    }
    last_ = now;
    record.output_tokens += count;
  }

  void End(RequestRecord& record) const { record.latency_s = SecondsBetween(start_, Clock::now()); }

 private:
  Clock::time_point start_;
  std::optional<Clock::time_point> last_;
};

void FillSampling(const TargetOptions& options, const BenchRequest& request, int64_t index,
                  v1::SamplingParams* sampling) {
  sampling->set_max_tokens(static_cast<uint32_t>(request.output_tokens));
  sampling->set_temperature(options.temperature);
  sampling->set_seed(options.seed + static_cast<uint64_t>(index));
  sampling->set_ignore_eos(true);
}

}  // namespace

GrpcCompletionTarget::GrpcCompletionTarget(PrivateTag, TargetOptions options,
                                           std::unique_ptr<Stubs> stubs)
    : options_(std::move(options)), stubs_(std::move(stubs)),
      run_id_(absl::StrCat(getpid(), "-", absl::ToUnixMicros(absl::Now()))) {}

GrpcCompletionTarget::~GrpcCompletionTarget() = default;

absl::StatusOr<std::unique_ptr<GrpcCompletionTarget>> GrpcCompletionTarget::Connect(
    const TargetOptions& options, absl::Time deadline) {
  if (options.address.empty()) return absl::InvalidArgumentError("--target is required");
  auto stubs = std::make_unique<Stubs>();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  stubs->channel = grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(), args);
  if (!stubs->channel->WaitForConnected(absl::ToChronoTime(deadline))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", options.address));
  }
  int64_t vocab_size = 0;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  if (options.direct) {
    stubs->worker = v1::Worker::NewStub(stubs->channel);
    v1::InfoResponse info;
    if (grpc::Status s = stubs->worker->Info(&context, {}, &info); !s.ok()) {
      return absl::Status(FromGrpcStatus(s).code(),
                          absl::StrCat(options.address, " Worker.Info: ", s.error_message(),
                                       " (is it a worker's gRPC port?)"));
    }
    vocab_size = info.vocab_size();
  } else {
    stubs->router = v1::Completions::NewStub(stubs->channel);
    if (!options.api_key.empty()) context.AddMetadata("authorization", "Bearer " + options.api_key);
    v1::ListModelsResponse models;
    if (grpc::Status s = stubs->router->ListModels(&context, {}, &models); !s.ok()) {
      return absl::Status(FromGrpcStatus(s).code(),
                          absl::StrCat(options.address, " Completions.ListModels: ",
                                       s.error_message(), " (is it a router's public port?)"));
    }
    if (models.models_size() == 0) {
      return absl::FailedPreconditionError(absl::StrCat(options.address, " serves no model"));
    }
    vocab_size = models.models(0).vocab_size();
  }
  if (vocab_size < 1) {
    return absl::FailedPreconditionError(absl::StrCat(options.address, " reports vocab_size 0"));
  }
  auto target = std::make_unique<GrpcCompletionTarget>(PrivateTag{}, options, std::move(stubs));
  target->vocab_size_ = vocab_size;
  return target;
}

std::string GrpcCompletionTarget::description() const {
  return options_.direct
             ? absl::StrCat("worker ", options_.address, " (Worker.Submit, no router)")
             : absl::StrCat("router ", options_.address, " (Completions.Generate)");
}

RequestRecord GrpcCompletionTarget::Send(const BenchRequest& request, int64_t index,
                                         absl::Time deadline) {
  RequestRecord record;
  record.prompt_tokens = static_cast<int64_t>(request.prompt.size());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  grpc::Status status;
  if (options_.direct) {
    v1::SubmitRequest submit;
    submit.set_request_id(absl::StrCat("bench-", run_id_, "-", index));
    submit.mutable_prompt_token_ids()->Add(request.prompt.begin(), request.prompt.end());
    FillSampling(options_, request, index, submit.mutable_sampling());
    submit.set_admitted_unix_us(absl::ToUnixMicros(absl::Now()));
    ChunkClock clock;
    std::unique_ptr<grpc::ClientReader<v1::SubmitEvent>> reader =
        stubs_->worker->Submit(&context, submit);
    v1::SubmitEvent event;
    while (reader->Read(&event)) {
      if (event.has_tokens()) clock.Tokens(record, event.tokens().token_ids_size());
      if (event.has_finish() && event.finish().usage().prompt_tokens() > 0) {
        record.prompt_tokens = event.finish().usage().prompt_tokens();
      }
    }
    status = reader->Finish();
    clock.End(record);
  } else {
    v1::CompletionRequest completion;
    completion.mutable_tokens()->mutable_ids()->Add(request.prompt.begin(), request.prompt.end());
    FillSampling(options_, request, index, completion.mutable_sampling());
    if (!options_.api_key.empty()) context.AddMetadata("authorization", "Bearer " + options_.api_key);
    ChunkClock clock;
    std::unique_ptr<grpc::ClientReader<v1::CompletionChunk>> reader =
        stubs_->router->Generate(&context, completion);
    v1::CompletionChunk chunk;
    while (reader->Read(&chunk)) {
      clock.Tokens(record, chunk.token_ids_size());
      if (chunk.has_usage() && chunk.usage().prompt_tokens() > 0) {
        record.prompt_tokens = chunk.usage().prompt_tokens();
      }
    }
    status = reader->Finish();
    clock.End(record);
  }
  record.status = FromGrpcStatus(status);
  if (record.status.ok() && record.output_tokens != request.output_tokens) {
    record.status = absl::DataLossError(absl::StrCat("asked for ", request.output_tokens,
                                                     " tokens (ignore_eos), received ",
                                                     record.output_tokens));
  }
  return record;
}

}  // namespace epinfer
