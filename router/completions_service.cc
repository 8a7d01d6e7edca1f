#include "router/completions_service.h"

#include "common/grpc_status.h"

namespace epinfer {

namespace {

absl::Time DeadlineOf(grpc::ServerContext* context) {
  const auto deadline = context->deadline();
  // No deadline reads as the far future; keep it infinite rather than overflow.
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 10)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace

bool BearerMatches(absl::string_view header, const std::string& key) {
  const absl::string_view prefix = "Bearer ";
  if (header.size() != prefix.size() + key.size() || header.substr(0, prefix.size()) != prefix) {
    return false;
  }
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); ++i) diff |= header[prefix.size() + i] ^ key[i];
  return diff == 0;
}

CompletionsService::CompletionsService(Completions& completions, RouterMetrics* metrics,
                                       std::string api_key)
    : completions_(completions), metrics_(metrics), api_key_(std::move(api_key)) {}

grpc::Status CompletionsService::Authorize(grpc::ServerContext* context) const {
  if (api_key_.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end() ||
      !BearerMatches(absl::string_view(it->second.data(), it->second.size()), api_key_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing or wrong API key (metadata authorization: Bearer <key>)");
  }
  return grpc::Status::OK;
}

grpc::Status CompletionsService::Finish(const char* method, const absl::Status& status) {
  if (metrics_) metrics_->Request(method, absl::StatusCodeToString(status.code()));
  return ToGrpcStatus(status);
}

grpc::Status CompletionsService::Complete(grpc::ServerContext* context,
                                          const v1::CompletionRequest* request,
                                          v1::CompletionResponse* response) {
  if (grpc::Status auth = Authorize(context); !auth.ok()) {
    return Finish("Complete", FromGrpcStatus(auth));
  }
  CallControl call;
  call.server_context = context;
  call.deadline = DeadlineOf(context);
  return Finish("Complete", completions_.Run(*request, call, nullptr, response));
}

grpc::Status CompletionsService::Generate(grpc::ServerContext* context,
                                          const v1::CompletionRequest* request,
                                          grpc::ServerWriter<v1::CompletionChunk>* writer) {
  if (grpc::Status auth = Authorize(context); !auth.ok()) {
    return Finish("Generate", FromGrpcStatus(auth));
  }
  class Sink : public CompletionSink {
   public:
    explicit Sink(grpc::ServerWriter<v1::CompletionChunk>* writer) : writer_(writer) {}
    bool Write(const v1::CompletionChunk& chunk) override { return writer_->Write(chunk); }

   private:
    grpc::ServerWriter<v1::CompletionChunk>* writer_;
  } sink(writer);
  CallControl call;
  call.server_context = context;
  call.deadline = DeadlineOf(context);
  call.assemble_response = false;
  v1::CompletionResponse unused;
  return Finish("Generate", completions_.Run(*request, call, &sink, &unused));
}

grpc::Status CompletionsService::ListModels(grpc::ServerContext* context,
                                            const v1::ListModelsRequest*,
                                            v1::ListModelsResponse* response) {
  if (grpc::Status auth = Authorize(context); !auth.ok()) {
    return Finish("ListModels", FromGrpcStatus(auth));
  }
  completions_.ListModels(response);
  return Finish("ListModels", absl::OkStatus());
}

}  // namespace epinfer
