#include "cli/model_commands.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "worker/comm/communicator.h"
#include "worker/comm/local.h"
#include "worker/comm/rendezvous.h"
#include "worker/comm/transport.h"
#include "worker/comm/ucx.h"
#include "worker/model/forward_job.h"
#include "worker/kernels/linear.h"
#include "worker/model/generate.h"
#include "tokenizer/trainer.h"
#include "worker/flags.h"
#include "worker/model/make_model.h"
#include "worker/model/model.h"

ABSL_FLAG(std::string, tokens, "", "Prompt token ids, comma-separated: 3,17,42.");
ABSL_FLAG(std::string, out, "", "Output path (forward: logits file; make-model: directory).");
ABSL_FLAG(std::string, mode, "prefill",
          "forward: prefill (all tokens in one step) or decode (one token per step through the "
          "KV cache).");
ABSL_FLAG(std::string, attention, "auto",
          "Attention form: auto (absorbed for single-token steps), naive or absorbed.");
ABSL_FLAG(std::string, preset, "tiny", "make-model preset: tiny, small or tiny-v2.");
ABSL_FLAG(std::string, dtype, "bf16", "make-model weight dtype: f32, bf16 or fp8.");
ABSL_FLAG(uint64_t, seed, 0, "Random seed (make-model weights; generate sampling).");
ABSL_FLAG(int, shards, 1, "make-model: number of safetensors files (index written when > 1).");
ABSL_FLAG(bool, q_lora, true, "make-model: low-rank queries (q_a_proj/q_b_proj); --no_q_lora "
                              "writes a plain q_proj like V2-Lite.");
ABSL_FLAG(int64_t, n_routed_experts, 0, "make-model: override the preset's routed experts.");
ABSL_FLAG(std::string, tokenizer_corpus, "",
          "make-model: train a byte-level BPE tokenizer of the model's vocab_size on this text "
          "file and write tokenizer.json + tokenizer_config.json beside the weights.");
ABSL_FLAG(int64_t, max_tokens, 16, "generate: tokens to generate, at least 1.");
ABSL_FLAG(double, temperature, 0.0, "generate: sampling temperature in [0, 2]; 0 is greedy.");
ABSL_FLAG(double, top_p, 1.0, "generate: nucleus mass in (0, 1].");
ABSL_FLAG(int, top_k, 0, "generate: keep the k most likely tokens; 0 = off.");
ABSL_FLAG(std::string, stop_token_ids, "", "generate: comma-separated ids that end generation.");
ABSL_FLAG(bool, ignore_eos, false, "generate: continue past the end-of-sentence token.");
ABSL_FLAG(int, ep, 1, "forward: expert-parallel ranks; sequences (';'-separated in --tokens) "
                      "spread over them round-robin for attention.");
ABSL_FLAG(std::string, placement, "",
          "forward: expert placement JSON {\"num_ranks\": N, \"phy2log\": [[...] per MoE layer]}; "
          "default: contiguous over --ep ranks.");
ABSL_FLAG(std::string, dispatch_dtype, "f32", "MoE dispatch activations: f32, bf16 or fp8.");
ABSL_FLAG(std::string, combine_dtype, "f32", "MoE combine activations: f32 or bf16.");
ABSL_FLAG(int, ep_rank, -1,
          "internal: this process's rank in a group of processes (--transport=ucx or nccl).");
ABSL_FLAG(std::string, config, "",
          "model-info: a config.json to describe (instead of --model DIR/config.json).");
ABSL_FLAG(std::string, rendezvous, "",
          "internal: rendezvous directory of a group of processes (--transport=ucx or nccl).");

namespace epinfer {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const std::string& flag,
                                              bool allow_empty) {
  std::vector<int32_t> ids;
  if (text.empty()) {
    if (allow_empty) return ids;
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " is required"));
  }
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": \"", part, "\" is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<AttentionForm> ParseAttention(const std::string& name) {
  if (name == "auto") return AttentionForm::kAuto;
  if (name == "naive") return AttentionForm::kNaive;
  if (name == "absorbed") return AttentionForm::kAbsorbed;
  return absl::InvalidArgumentError(absl::StrCat("--attention=", name,
                                                 ": expected auto, naive or absorbed"));
}

// Runs `body`; a usage problem (INVALID_ARGUMENT from flags) exits 2, any other error 1.
int Finish(const char* program, const absl::Status& status) {
  if (status.ok()) return 0;
  std::cerr << program << ": " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<DType> ParseActivationDType(const std::string& name, bool allow_fp8) {
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "fp8" && allow_fp8) return DType::kF8E4M3;
  return absl::InvalidArgumentError(absl::StrCat("activation dtype \"", name, "\": expected f32, bf16",
                                                 allow_fp8 ? " or fp8" : ""));
}

absl::Status WriteFloats(const std::string& path, const std::vector<float>& values) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size() * sizeof(float)));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

// The arguments this command was started with, for re-executing it as the other UCX ranks.
std::vector<std::string> g_forward_args;

absl::Status Forward() {
  ForwardJob job;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ';')) {
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIds(std::string(part), "tokens", false));
    job.sequences.push_back(std::move(ids));
  }
  ASSIGN_OR_RETURN(job.options.attention, ParseAttention(absl::GetFlag(FLAGS_attention)));
  ASSIGN_OR_RETURN(job.options.moe_transport.dispatch,
                   ParseActivationDType(absl::GetFlag(FLAGS_dispatch_dtype), true));
  ASSIGN_OR_RETURN(job.options.moe_transport.combine,
                   ParseActivationDType(absl::GetFlag(FLAGS_combine_dtype), false));
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "prefill" && mode != "decode") {
    return absl::InvalidArgumentError(absl::StrCat("--mode=", mode, ": expected prefill or decode"));
  }
  job.decode = mode == "decode";
  job.model_dir = absl::GetFlag(FLAGS_model);
  if (job.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  job.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mb) << 20;
  if (const std::string path = absl::GetFlag(FLAGS_placement); !path.empty()) {
    std::ifstream in(path);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--placement: cannot read ", path));
    std::stringstream text;
    text << in.rdbuf();
    job.placement_json = text.str();
  }
  const int ep = absl::GetFlag(FLAGS_ep);
  if (ep < 1 || ep > 64) return absl::InvalidArgumentError(absl::StrCat("--ep=", ep, ": 1..64"));
  if (const int lanes = absl::GetFlag(FLAGS_comm_lanes); lanes < 1 || lanes > kMaxUcxLanes) {
    return absl::InvalidArgumentError(absl::StrCat("--comm_lanes=", lanes, ": 1..", kMaxUcxLanes));
  }
  const std::string transport =
      absl::GetFlag(FLAGS_transport).empty() ? "local" : absl::GetFlag(FLAGS_transport);
  if (transport != "local") {
    if (absl::Status status = CheckProcessTransport(transport); !status.ok()) {
      return absl::Status(status.code(), absl::StrCat(status.message(), " (or local)"));
    }
  }
  const int ep_rank = absl::GetFlag(FLAGS_ep_rank);
  const bool writes_output = ep_rank <= 0;
  if (writes_output && absl::GetFlag(FLAGS_out).empty()) {
    return absl::InvalidArgumentError("--out is required");
  }
  SetKernelThreads(absl::GetFlag(FLAGS_threads));

  std::vector<float> logits;
  if (ep == 1 && transport == "local") {
    std::unique_ptr<Communicator> comm = MakeSingleRankCommunicator();
    ASSIGN_OR_RETURN(logits, RunForwardJob(job, *comm));
  } else if (transport == "local") {
    // Ranks as threads; each loads its own experts.
    std::vector<std::unique_ptr<Communicator>> ranks = LocalGroup::Create(ep);
    std::vector<absl::StatusOr<std::vector<float>>> results(ep, std::vector<float>());
    std::vector<std::thread> threads;
    for (int r = 0; r < ep; ++r) {
      threads.emplace_back([&, r] {
        SetKernelThreads(absl::GetFlag(FLAGS_threads));  // per thread in OpenMP
        results[r] = RunForwardJob(job, *ranks[r]);
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < ep; ++r) {
      if (!results[r].ok()) return results[r].status();
    }
    logits = *std::move(results[0]);
  } else {
    // Ranks as processes: rank 0 (this process, unless --ep_rank says otherwise) starts the
    // others as copies of this command with --ep_rank and a shared rendezvous directory.
    std::string rendezvous = absl::GetFlag(FLAGS_rendezvous);
    std::vector<std::unique_ptr<Subprocess>> children;
    if (ep_rank < 0) {
      char dir[] = "/tmp/epinfer-rendezvous-XXXXXX";
      if (mkdtemp(dir) == nullptr) return absl::InternalError("cannot create a rendezvous dir");
      rendezvous = dir;
      for (int r = 1; r < ep; ++r) {
        std::vector<std::string> argv = {Subprocess::SelfPath(), "forward"};
        argv.insert(argv.end(), g_forward_args.begin(), g_forward_args.end());
        argv.push_back(absl::StrCat("--ep_rank=", r));
        argv.push_back("--rendezvous=" + rendezvous);
        ASSIGN_OR_RETURN(std::unique_ptr<Subprocess> child, Subprocess::Start(argv, {}));
        children.push_back(std::move(child));
      }
    }
    auto meeting = MakeFileRendezvous(rendezvous, "forward");
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                     MakeProcessCommunicator(transport, std::max(ep_rank, 0), ep, *meeting,
                                             absl::Now() + absl::Seconds(60),
                                             absl::GetFlag(FLAGS_comm_lanes)));
    ASSIGN_OR_RETURN(logits, RunForwardJob(job, *comm));
    for (size_t i = 0; i < children.size(); ++i) {
      ASSIGN_OR_RETURN(int code, children[i]->Wait(absl::Now() + absl::Seconds(60)));
      if (code != 0) {
        return absl::InternalError(absl::StrCat(transport, " rank ", i + 1, " exited with ", code));
      }
    }
    if (ep_rank < 0) std::filesystem::remove_all(rendezvous);
  }
  if (!writes_output) return absl::OkStatus();
  return WriteFloats(absl::GetFlag(FLAGS_out), logits);
}

absl::Status Generate() {
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                   ParseIds(absl::GetFlag(FLAGS_tokens), "tokens", false));
  ASSIGN_OR_RETURN(std::vector<int32_t> stop,
                   ParseIds(absl::GetFlag(FLAGS_stop_token_ids), "stop_token_ids", true));
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is required");
  GenerateOptions options;
  options.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.stop_token_ids = stop;
  options.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  options.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  options.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  options.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  options.sampling.seed = absl::GetFlag(FLAGS_seed);
  RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling, 1 << 30));
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--max_tokens=", options.max_tokens,
                                                   " must be at least 1"));
  }
  SetKernelThreads(absl::GetFlag(FLAGS_threads));
  ASSIGN_OR_RETURN(std::unique_ptr<DeepseekV3Model> model,
                   DeepseekV3Model::Load(absl::GetFlag(FLAGS_model)));
  ASSIGN_OR_RETURN(KvCache cache, model->MakeKvCache(absl::GetFlag(FLAGS_kv_cache_mb) << 20));
  std::unique_ptr<Communicator> comm = MakeSingleRankCommunicator();
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(Generation generation,
                   GenerateSequence(*model, cache, *comm, tokens, options));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::cerr << "generated " << generation.tokens.size() << " tokens in " << seconds << " s\n";
  std::cout << absl::StrJoin(generation.tokens, ",") << "\n";
  return absl::OkStatus();
}

absl::Status MakeModelCommand() {
  MakeModelOptions options;
  options.preset = absl::GetFlag(FLAGS_preset);
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "f32") {
    options.dtype = DType::kF32;
  } else if (dtype == "bf16") {
    options.dtype = DType::kBF16;
  } else if (dtype == "fp8") {
    options.dtype = DType::kF8E4M3;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--dtype=", dtype, ": expected f32, bf16 or fp8"));
  }
  options.seed = absl::GetFlag(FLAGS_seed);
  options.out_dir = absl::GetFlag(FLAGS_out);
  if (options.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  options.shards = absl::GetFlag(FLAGS_shards);
  options.q_lora = absl::GetFlag(FLAGS_q_lora);
  options.n_routed_experts = absl::GetFlag(FLAGS_n_routed_experts);
  RETURN_IF_ERROR(MakeModel(options));
  if (const std::string corpus_path = absl::GetFlag(FLAGS_tokenizer_corpus); !corpus_path.empty()) {
    std::ifstream in(corpus_path);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--tokenizer_corpus: cannot read ", corpus_path));
    std::stringstream corpus;
    corpus << in.rdbuf();
    ASSIGN_OR_RETURN(std::string config_text, PresetConfigJson(options));
    ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(config_text));
    RETURN_IF_ERROR(TrainTokenizer(corpus.str(), static_cast<int>(config.vocab_size), options.out_dir));
  }
  std::cerr << "wrote " << options.preset << " " << dtype << " model to " << options.out_dir
            << "\n";
  return absl::OkStatus();
}

// "70,272" (n >= 0).
std::string WithCommas(int64_t n) {
  const std::string digits = absl::StrCat(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// "671,026,419,200 (671.0 B)".
std::string Count(int64_t n) { return absl::StrFormat("%s (%.1f B)", WithCommas(n), n / 1e9); }

absl::Status ModelInfo() {
  const std::string model = absl::GetFlag(FLAGS_model), file = absl::GetFlag(FLAGS_config);
  if (model.empty() == file.empty()) {
    return absl::InvalidArgumentError("give one of --model DIR or --config FILE");
  }
  const std::string path = file.empty() ? (std::filesystem::path(model) / "config.json").string()
                                        : file;
  ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(path));
  const int64_t moe_layers = c.num_moe_layers();
  std::cout << "model_type: " << c.model_type << "\n"
            << "layers: " << c.num_hidden_layers << " (" << c.num_hidden_layers - moe_layers
            << " dense, " << moe_layers << " MoE)"
            << (c.num_nextn_predict_layers > 0
                    ? absl::StrCat(", and ", c.num_nextn_predict_layers,
                                   " multi-token-prediction layer(s), not counted and not run")
                    : "")
            << "\n"
            << "experts per MoE layer: " << c.n_routed_experts << " routed, "
            << c.num_experts_per_tok << " active per token, " << c.n_shared_experts
            << " shared\n"
            << "parameters: " << Count(c.ParameterCount()) << "\n"
            << "parameters active per token: " << Count(c.ActiveParameterCount()) << "\n"
            << "weights: " << (c.fp8_weights ? "F8_E4M3 with 128x128 block scales" : "as stored")
            << "\n"
            << "latent KV cache per token: " << c.kv_cache_dim() << " values x "
            << c.num_hidden_layers << " layers = " << WithCommas(c.KvBytesPerToken(2))
            << " bytes in BF16, " << WithCommas(c.KvBytesPerToken(4))
            << " bytes in F32 (as this engine caches it)\n";
  return absl::OkStatus();
}

int Run(int argc, char** argv, const char* usage, const std::vector<std::string>& flags,
        absl::Status (*body)()) {
  std::vector<std::string> args = ParseFlagsOrExit(argc, argv, usage, flags);
  if (!args.empty()) {
    ExitWithUsageError(argv[0], usage, absl::StrCat("unexpected argument '", args[0], "'"), flags);
  }
  return Finish(argv[0], body());
}

}  // namespace

int RunMakeModel(int argc, char** argv) {
  return Run(argc, argv, "--preset tiny|small|tiny-v2 --dtype f32|bf16|fp8 --seed N --out DIR",
             {"preset", "dtype", "seed", "out", "shards", "q_lora", "n_routed_experts",
              "tokenizer_corpus"},
             MakeModelCommand);
}

int RunForward(int argc, char** argv) {
  g_forward_args.assign(argv + 1, argv + argc);
  return Run(argc, argv,
             "--model DIR --tokens 3,17,42[;5,9] --out FILE [--mode prefill|decode] [--ep N "
             "--transport local|ucx|nccl]",
             {"model", "tokens", "out", "mode", "attention", "threads", "kv_cache_mb", "ep",
              "comm_lanes",
              "transport", "placement", "dispatch_dtype", "combine_dtype", "ep_rank",
              "rendezvous"},
             Forward);
}

int RunModelInfo(int argc, char** argv) {
  return Run(argc, argv, "--model DIR | --config FILE", {"model", "config"}, ModelInfo);
}

int RunGenerate(int argc, char** argv) {
  return Run(argc, argv, "--model DIR --tokens 3,17,42 --max-tokens N [sampling flags]",
             {"model", "tokens", "max_tokens", "temperature", "top_p", "top_k", "seed",
              "stop_token_ids", "ignore_eos", "threads", "kv_cache_mb"},
             Generate);
}

}  // namespace epinfer
