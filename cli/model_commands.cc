#include "cli/model_commands.h"

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "worker/comm/communicator.h"
#include "worker/kernels/linear.h"
#include "worker/model/generate.h"
#include "worker/model/make_model.h"
#include "worker/model/model.h"

ABSL_FLAG(std::string, model, "", "Checkpoint directory (config.json + safetensors).");
ABSL_FLAG(std::string, tokens, "", "Prompt token ids, comma-separated: 3,17,42.");
ABSL_FLAG(std::string, out, "", "Output path (forward: logits file; make-model: directory).");
ABSL_FLAG(std::string, mode, "prefill",
          "forward: prefill (all tokens in one step) or decode (one token per step through the "
          "KV cache).");
ABSL_FLAG(std::string, attention, "auto",
          "Attention form: auto (absorbed for single-token steps), naive or absorbed.");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = all cores.");
ABSL_FLAG(std::string, preset, "tiny", "make-model preset: tiny, small or tiny-v2.");
ABSL_FLAG(std::string, dtype, "bf16", "make-model weight dtype: f32, bf16 or fp8.");
ABSL_FLAG(uint64_t, seed, 0, "Random seed (make-model weights; generate sampling).");
ABSL_FLAG(int, shards, 1, "make-model: number of safetensors files (index written when > 1).");
ABSL_FLAG(bool, q_lora, true, "make-model: low-rank queries (q_a_proj/q_b_proj); --no_q_lora "
                              "writes a plain q_proj like V2-Lite.");
ABSL_FLAG(int64_t, n_routed_experts, 0, "make-model: override the preset's routed experts.");
ABSL_FLAG(int64_t, max_tokens, 16, "generate: tokens to generate, at least 1.");
ABSL_FLAG(double, temperature, 0.0, "generate: sampling temperature in [0, 2]; 0 is greedy.");
ABSL_FLAG(double, top_p, 1.0, "generate: nucleus mass in (0, 1].");
ABSL_FLAG(int, top_k, 0, "generate: keep the k most likely tokens; 0 = off.");
ABSL_FLAG(std::string, stop_token_ids, "", "generate: comma-separated ids that end generation.");
ABSL_FLAG(bool, ignore_eos, false, "generate: continue past the end-of-sentence token.");
ABSL_FLAG(int64_t, kv_cache_mb, 256, "KV cache budget in MiB.");

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

absl::Status Forward() {
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                   ParseIds(absl::GetFlag(FLAGS_tokens), "tokens", false));
  ASSIGN_OR_RETURN(AttentionForm attention, ParseAttention(absl::GetFlag(FLAGS_attention)));
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "prefill" && mode != "decode") {
    return absl::InvalidArgumentError(absl::StrCat("--mode=", mode, ": expected prefill or decode"));
  }
  if (absl::GetFlag(FLAGS_out).empty()) return absl::InvalidArgumentError("--out is required");
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is required");
  SetKernelThreads(absl::GetFlag(FLAGS_threads));
  ASSIGN_OR_RETURN(std::unique_ptr<DeepseekV3Model> model,
                   DeepseekV3Model::Load(absl::GetFlag(FLAGS_model)));
  const int64_t vocab = model->config().vocab_size;
  ASSIGN_OR_RETURN(KvCache cache, model->MakeKvCache(absl::GetFlag(FLAGS_kv_cache_mb) << 20));
  KvBlockTable kv;
  RETURN_IF_ERROR(cache.Reserve(kv, static_cast<int64_t>(tokens.size())));
  std::unique_ptr<Communicator> comm = MakeSingleRankCommunicator();
  ForwardOptions options;
  options.attention = attention;
  std::vector<float> all, logits;
  if (mode == "prefill") {
    SequenceStep step{tokens, 0, &kv, true};
    RETURN_IF_ERROR(model->Forward({&step, 1}, cache, *comm, options, &all));
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      SequenceStep step{absl::Span<const int32_t>(&tokens[i], 1), static_cast<int64_t>(i), &kv,
                        true};
      RETURN_IF_ERROR(model->Forward({&step, 1}, cache, *comm, options, &logits));
      all.insert(all.end(), logits.begin(), logits.end());
    }
  }
  if (all.size() != tokens.size() * static_cast<size_t>(vocab)) {
    return absl::InternalError("forward produced the wrong number of logits");
  }
  std::ofstream out(absl::GetFlag(FLAGS_out), std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(all.data()),
            static_cast<std::streamsize>(all.size() * sizeof(float)));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(absl::GetFlag(FLAGS_out), ": write failed"));
  return absl::OkStatus();
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
  std::cerr << "wrote " << options.preset << " " << dtype << " model to " << options.out_dir
            << "\n";
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
             {"preset", "dtype", "seed", "out", "shards", "q_lora", "n_routed_experts"},
             MakeModelCommand);
}

int RunForward(int argc, char** argv) {
  return Run(argc, argv, "--model DIR --tokens 3,17,42 --out FILE [--mode prefill|decode]",
             {"model", "tokens", "out", "mode", "attention", "threads", "kv_cache_mb"}, Forward);
}

int RunGenerate(int argc, char** argv) {
  return Run(argc, argv, "--model DIR --tokens 3,17,42 --max-tokens N [sampling flags]",
             {"model", "tokens", "max_tokens", "temperature", "top_p", "top_k", "seed",
              "stop_token_ids", "ignore_eos", "threads", "kv_cache_mb"},
             Generate);
}

}  // namespace epinfer
