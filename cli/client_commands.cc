#include "cli/client_commands.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/flags.h"
#include "common/grpc_status.h"
#include "epinfer/v1/completion.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "The router's public gRPC address.");
ABSL_FLAG(std::string, prompt, "", "A text prompt.");
ABSL_FLAG(std::string, chat, "", "A user message, rendered with the model's chat template.");
ABSL_FLAG(std::string, system, "", "With --chat: a system prompt.");
ABSL_FLAG(std::string, prompt_tokens, "", "Token ids instead of text: 3,17,42 (also --tokens).");
ABSL_FLAG(std::string, stop, "", "Stop strings, separated by '|'.");
ABSL_FLAG(bool, print_ids, false, "End with one line of the generated token ids, comma-separated.");
ABSL_FLAG(int, timeout_s, 300, "Deadline of the whole call.");
ABSL_FLAG(std::string, api_key, "", "API key (sent as authorization: Bearer <key>).");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA to verify the router's TLS certificate; enables TLS.");
ABSL_FLAG(int, logprobs, -1, "Top alternatives per token to return (0..20); -1: none.");

// Shared with `generate` (defined in model_commands.cc).
ABSL_DECLARE_FLAG(std::string, tokens);
ABSL_DECLARE_FLAG(int64_t, max_tokens);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(double, top_p);
ABSL_DECLARE_FLAG(int, top_k);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(bool, ignore_eos);

namespace epinfer {
namespace {

constexpr char kUsage[] =
    "--target HOST:PORT (--prompt TEXT | --chat TEXT | --tokens 3,17,42) [sampling flags] "
    "[--print-ids]";

absl::StatusOr<v1::CompletionRequest> BuildRequest() {
  v1::CompletionRequest request;
  const std::string prompt = absl::GetFlag(FLAGS_prompt), chat = absl::GetFlag(FLAGS_chat);
  std::string tokens = absl::GetFlag(FLAGS_prompt_tokens);
  if (tokens.empty()) tokens = absl::GetFlag(FLAGS_tokens);
  const int forms = !prompt.empty() + !chat.empty() + !tokens.empty();
  if (forms != 1) {
    return absl::InvalidArgumentError("give exactly one of --prompt, --chat or --tokens");
  }
  if (!prompt.empty()) request.set_text(prompt);
  if (!chat.empty()) {
    if (!absl::GetFlag(FLAGS_system).empty()) {
      auto* m = request.mutable_chat()->add_messages();
      m->set_role("system");
      m->set_content(absl::GetFlag(FLAGS_system));
    }
    auto* m = request.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content(chat);
  }
  if (!tokens.empty()) {
    for (absl::string_view part : absl::StrSplit(tokens, ',')) {
      uint32_t id;
      if (!absl::SimpleAtoi(part, &id)) {
        return absl::InvalidArgumentError(absl::StrCat("--tokens: \"", part, "\" is not a token id"));
      }
      request.mutable_tokens()->add_ids(id);
    }
  }
  v1::SamplingParams* s = request.mutable_sampling();
  if (absl::GetFlag(FLAGS_max_tokens) < 1) {
    return absl::InvalidArgumentError("--max_tokens must be at least 1");
  }
  s->set_max_tokens(static_cast<uint32_t>(absl::GetFlag(FLAGS_max_tokens)));
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  s->set_top_k(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_top_k))));
  s->set_seed(absl::GetFlag(FLAGS_seed));
  s->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  if (absl::GetFlag(FLAGS_logprobs) >= 0) s->set_logprobs(static_cast<uint32_t>(absl::GetFlag(FLAGS_logprobs)));
  if (const std::string stop = absl::GetFlag(FLAGS_stop); !stop.empty()) {
    for (absl::string_view part : absl::StrSplit(stop, '|')) s->add_stop(std::string(part));
  }
  return request;
}

absl::Status Complete() {
  absl::StatusOr<v1::CompletionRequest> request = BuildRequest();
  if (!request.ok()) return request.status();
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
    std::ifstream in(ca);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--tls_ca: cannot read ", ca));
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(options);
  }
  auto stub = v1::Completions::NewStub(grpc::CreateChannel(absl::GetFlag(FLAGS_target), credentials));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  if (!absl::GetFlag(FLAGS_api_key).empty()) {
    context.AddMetadata("authorization", "Bearer " + absl::GetFlag(FLAGS_api_key));
  }
  const absl::Time start = absl::Now();
  std::optional<absl::Time> first;
  auto reader = stub->Generate(&context, *request);
  v1::CompletionChunk chunk;
  std::vector<uint32_t> ids;
  v1::Usage usage;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  bool in_reasoning = false;
  while (reader->Read(&chunk)) {
    if (!first && chunk.token_ids_size() > 0) first = absl::Now();
    if (!chunk.reasoning_content().empty()) {
      if (!in_reasoning) std::cout << "<think>";
      in_reasoning = true;
      std::cout << chunk.reasoning_content();
    }
    if (!chunk.text().empty()) {
      if (in_reasoning) std::cout << "</think>\n";
      in_reasoning = false;
      std::cout << chunk.text();
    }
    std::cout.flush();
    ids.insert(ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    if (chunk.has_usage()) usage = chunk.usage();
    if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = chunk.finish_reason();
  }
  grpc::Status status = reader->Finish();
  std::cout << "\n";
  if (!status.ok()) return FromGrpcStatus(status);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::cerr << absl::StrCat(usage.completion_tokens(), " tokens in ", seconds, " s (",
                            seconds > 0 ? usage.completion_tokens() / seconds : 0.0,
                            " tok/s), first token after ",
                            first ? absl::ToDoubleMilliseconds(*first - start) : 0.0,
                            " ms, prompt ", usage.prompt_tokens(), " tokens, finish ",
                            v1::FinishReason_Name(finish))
            << "\n";
  if (absl::GetFlag(FLAGS_print_ids)) std::cout << absl::StrJoin(ids, ",") << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunComplete(int argc, char** argv) {
  const std::vector<std::string> flags = {
      "target", "prompt", "chat", "system", "prompt_tokens", "tokens", "max_tokens",
      "temperature", "top_p", "top_k", "seed", "ignore_eos", "stop", "print_ids", "timeout_s",
      "api_key", "tls_ca", "logprobs"};
  std::vector<std::string> args = ParseFlagsOrExit(argc, argv, kUsage, flags);
  if (!args.empty()) ExitWithUsageError("complete", kUsage, "unexpected argument " + args[0], flags);
  absl::Status status = Complete();
  if (status.ok()) return 0;
  std::cerr << "complete: " << status.ToString() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument && status.message().find("--") != absl::string_view::npos ? 2 : 1;
}

}  // namespace epinfer
