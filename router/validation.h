#ifndef EPINFER_ROUTER_VALIDATION_H_
#define EPINFER_ROUTER_VALIDATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "epinfer/v1/completion.pb.h"

namespace epinfer {

struct ModelLimits {
  int64_t vocab_size = 0;
  int64_t context_length = 0;
};

// Every bound documented in completion.proto, before tokenization. INVALID_ARGUMENT with a
// message that names the field ("sampling.top_p: 1.5 is outside (0, 1]").
absl::Status ValidateCompletionRequest(const v1::CompletionRequest& request,
                                       const ModelLimits& limits);

// After tokenization: prompt + max_tokens must fit the context. Returns the max_tokens to use
// (0 in the request means min(256, what the context leaves)).
absl::StatusOr<int64_t> ResolveMaxTokens(const v1::CompletionRequest& request,
                                         int64_t prompt_tokens, const ModelLimits& limits);

bool IsValidUtf8(absl::string_view text, size_t* bad_offset = nullptr);

}  // namespace epinfer

#endif  // EPINFER_ROUTER_VALIDATION_H_
