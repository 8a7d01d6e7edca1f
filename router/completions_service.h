#ifndef EPINFER_ROUTER_COMPLETIONS_SERVICE_H_
#define EPINFER_ROUTER_COMPLETIONS_SERVICE_H_

#include <string>

#include "epinfer/v1/completion.grpc.pb.h"
#include "router/completions.h"

namespace epinfer {

// epinfer.v1.Completions over gRPC: a thin adapter of Completions. With an API key set, every
// call must carry "authorization: Bearer <key>" metadata.
class CompletionsService final : public v1::Completions::Service {
 public:
  CompletionsService(Completions& completions, RouterMetrics* metrics, std::string api_key);

  grpc::Status Complete(grpc::ServerContext* context, const v1::CompletionRequest* request,
                        v1::CompletionResponse* response) override;
  grpc::Status Generate(grpc::ServerContext* context, const v1::CompletionRequest* request,
                        grpc::ServerWriter<v1::CompletionChunk>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;

 private:
  grpc::Status Authorize(grpc::ServerContext* context) const;
  grpc::Status Finish(const char* method, const absl::Status& status);

  Completions& completions_;
  RouterMetrics* metrics_;
  const std::string api_key_;
};

// Constant-time comparison of "Bearer <key>" against the configured key.
bool BearerMatches(absl::string_view header, const std::string& key);

}  // namespace epinfer

#endif  // EPINFER_ROUTER_COMPLETIONS_SERVICE_H_
