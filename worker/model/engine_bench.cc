// Engine throughput on the `small` preset against the limits of the machine it runs on:
// prefill of a 512-token prompt and decode at batch 1/8/32, 1 and 2 threads, BF16 and FP8
// weights; in the same run the read memory bandwidth (the bound for batch-1 decode) and the
// OpenBLAS sgemm peak (the bound for prefill). Prints a markdown table.
//
//   bazel run --config=bench //worker/model:engine_bench
//
// A benchmark, not a test: it asserts nothing about time.

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "worker/comm/communicator.h"
#include "worker/kernels/linear.h"
#include "worker/kernels/weight_arena.h"
#include "worker/model/make_model.h"
#include "worker/model/model.h"

ABSL_FLAG(std::string, cache_dir, "/tmp/epinfer-bench",
          "Where the `small` checkpoints live (small-bf16, small-fp8); made when missing.");
ABSL_FLAG(std::string, dtypes, "bf16,fp8", "Weight dtypes to run: bf16, fp8, f32.");
ABSL_FLAG(std::string, threads, "1,2", "Thread counts to run.");
ABSL_FLAG(std::string, batches, "1,8,32", "Decode batch sizes (sequences per step).");
ABSL_FLAG(int64_t, prefill_tokens, 512, "Prompt length of the prefill measurement.");
ABSL_FLAG(int64_t, decode_context, 32, "Tokens prefilled per sequence before decoding.");
ABSL_FLAG(double, min_seconds, 1.5,
          "Each decode measurement runs about this long (three segments of at most 80 steps).");
ABSL_FLAG(bool, measure_limits, true,
          "Measure bandwidth and sgemm peak (off: engine numbers only, for profiling).");
ABSL_FLAG(int, repeats, 2, "Prefill repetitions per round (the best counts).");
ABSL_FLAG(int, rounds, 3,
          "Rounds over all measurements, interleaved in time; each measurement's best counts.");
ABSL_FLAG(int, ratio_pairs, 12,
          "Pairs of single batch-1 decode segments, bf16 and fp8 back to back (ABBA order), per "
          "thread count: the FP8/BF16 ratio is their median (0: best of rounds only).");

namespace epinfer {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// ---- a shared machine -------------------------------------------------------------------------

// CPU time from /proc: all CPUs' busy and total ticks, and this process's own.
struct CpuTicks {
  int64_t busy = 0, total = 0, self = 0;
};

CpuTicks SampleCpu() {
  CpuTicks t;
  std::ifstream stat("/proc/stat");
  std::string cpu;
  int64_t v[8] = {};
  stat >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
  t.total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
  t.busy = t.total - v[3] - v[4];  // minus idle and iowait
  std::ifstream self("/proc/self/stat");
  std::string line;
  std::getline(self, line);
  // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
  std::vector<std::string> fields = absl::StrSplit(line.substr(line.rfind(')') + 2), ' ');
  int64_t utime = 0, stime = 0;
  if (fields.size() > 12 && absl::SimpleAtoi(fields[11], &utime) &&
      absl::SimpleAtoi(fields[12], &stime)) {
    t.self = utime + stime;
  }
  return t;
}

// This machine is shared: other processes (compilers, tests) take cores for seconds at a time,
// which would make a 2-thread measurement meaningless. Runs `measure` (higher is better) until
// one run saw other processes use under 3% of the CPUs, at most kAttempts times, and returns the
// best clean result (the best of all, flagged, if none was clean).
struct QuietResult {
  double value = 0;
  bool clean = false;
};

int g_repeated = 0, g_unclean = 0;

template <class Measure>
absl::StatusOr<QuietResult> Quietly(Measure measure) {
  constexpr int kAttempts = 8;
  QuietResult best;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const CpuTicks before = SampleCpu();
    absl::StatusOr<double> value = measure();
    if (!value.ok()) return value.status();
    const CpuTicks after = SampleCpu();
    const int64_t total = after.total - before.total;
    const double foreign =
        total > 0 ? static_cast<double>((after.busy - before.busy) - (after.self - before.self)) /
                        static_cast<double>(total)
                  : 0.0;
    if (foreign < 0.03) return QuietResult{*value, true};
    best.value = std::max(best.value, *value);
    ++g_repeated;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  ++g_unclean;
  return best;
}

// ---- machine limits ---------------------------------------------------------------------------

// The sum of n floats read as `streams` interleaved sequential streams (n a multiple of
// 64 × streams): cores read more in flight from several streams than from one, as the batch-1
// kernels do (two panels at a time), so the bound is the best over stream counts.
__attribute__((target("avx512f"))) float SumAvx512(const float* p, int64_t n, int streams) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const int64_t part = n / streams;
  for (int64_t i = 0; i + 64 <= part; i += 64) {
    for (int s = 0; s < streams; ++s) {
      const float* q = p + s * part + i;
      a0 = _mm512_add_ps(a0, _mm512_load_ps(q));
      a1 = _mm512_add_ps(a1, _mm512_load_ps(q + 16));
      a2 = _mm512_add_ps(a2, _mm512_load_ps(q + 32));
      a3 = _mm512_add_ps(a3, _mm512_load_ps(q + 48));
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) float SumAvx2(const float* p, int64_t n, int) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float v : lanes) s += v;
  return s;
}

float SumScalar(const float* p, int64_t n, int) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

// STREAM-like read bandwidth: each thread sums its part of a buffer 20× the L3 size with the
// widest SIMD the CPU has, as 1, 2 or 4 interleaved streams (AVX-512; one stream otherwise); best
// of 5 passes of each, bytes/second.
double ReadBandwidth(int threads) {
  constexpr int64_t kBytes = int64_t{1} << 30;
  const int64_t n = kBytes / sizeof(float);
  // In the memory the packed weights live in (WeightArena: huge pages where the kernel grants
  // them), so the bound and the weight streams it bounds walk the same pages.
  static WeightArena arena;
  static float* buffer = nullptr;
  if (buffer == nullptr) {
    buffer = reinterpret_cast<float*>(arena.Allocate(kBytes));
    if (buffer == nullptr) {
      std::fprintf(stderr, "engine_bench: cannot map %lld bytes\n", static_cast<long long>(kBytes));
      std::exit(1);
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) buffer[i] = 1.0f;
  }
  auto sum = ActiveSimd() >= Simd::kAvx512 ? SumAvx512
             : ActiveSimd() == Simd::kAvx2 ? SumAvx2
                                            : SumScalar;
  double best = 1e30;
  volatile float sink = 0;
  // Interleaved streams only where the AVX-512 sum reads them; the others read one.
  const std::vector<int> stream_counts =
      ActiveSimd() >= Simd::kAvx512 ? std::vector<int>{1, 2, 4} : std::vector<int>{1};
  for (int streams : stream_counts) {
    for (int pass = 0; pass < 5; ++pass) {
      const Clock::time_point start = Clock::now();
      float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
      {
        const int64_t chunk = n / omp_get_num_threads() / (64 * streams) * (64 * streams);
        total += sum(buffer + omp_get_thread_num() * chunk, chunk, streams);
      }
      best = std::min(best, Seconds(start));
      sink = sink + total;
    }
  }
  return static_cast<double>(kBytes) / best;
}

// OpenBLAS sgemm on 2048³ (row-major, B transposed as the engine calls it): FLOP/s, best of 3.
double SgemmPeak(int threads) {
  constexpr int kN = 2048;
  std::vector<float> a(kN * kN, 0.5f), b(kN * kN, 0.25f), c(kN * kN);
  openblas_set_num_threads(threads);
  double best = 1e30;
  for (int pass = 0; pass < 4; ++pass) {
    const Clock::time_point start = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kN, kN, kN, 1.0f, a.data(), kN, b.data(),
                kN, 0.0f, c.data(), kN);
    if (pass > 0) best = std::min(best, Seconds(start));
  }
  openblas_set_num_threads(1);
  return 2.0 * kN * kN * kN / best;
}

// The panel kernels' rate when memory is not the limit: a (512 × threads)×1024 weight in `dtype`
// (valid values, unit block scales), packed as the model loader packs it, multiplied by one token
// over and over on `threads` threads, so each core's 512 rows stay in its L2. Weight bytes/s,
// best of 10 windows of 50 ms. Against the read bandwidth it says how much of the cores' issue a
// batch-1 step needs: FP8 converts each byte with several vector operations, BF16 with one.
double KernelFromCache(DType dtype, int threads) {
  constexpr int64_t kCols = 1024;
  const int64_t rows = 512 * std::max(threads, 1);
  struct Packed {
    LinearWeight w;
    std::vector<uint8_t> bytes;
    std::vector<float> scales;
  };
  static WeightArena arena;
  static std::map<std::pair<DType, int>, Packed> packed;  // nodes stay put: w points into them
  auto [it, fresh] = packed.try_emplace({dtype, threads});
  LinearWeight& w = it->second.w;
  if (fresh) {
    std::vector<uint8_t>& bytes = it->second.bytes;
    bytes.resize(static_cast<size_t>(rows * kCols * DTypeSize(dtype)));
    for (size_t i = 0; i < bytes.size(); ++i) {
      // E4M3 codes 0x08-0x77 and their negatives (normal, no NaN); BF16 bytes of ±0.5-2.
      const uint8_t sign = static_cast<uint8_t>(i & 0x80);
      bytes[i] = dtype == DType::kF8E4M3 ? static_cast<uint8_t>((0x08 + i * 37 % 0x70) | sign)
                 : i % 2 == 0            ? static_cast<uint8_t>(i * 37)
                                         : static_cast<uint8_t>(0x3f | sign);
    }
    w.dtype = dtype;
    w.rows = rows;
    w.cols = kCols;
    w.data = bytes.data();
    if (dtype == DType::kF8E4M3) {
      it->second.scales.assign(static_cast<size_t>((rows + 127) / 128 * w.scale_cols()), 1.0f);
      w.scale_inv = it->second.scales.data();
    }
    PackPanels(&w, &arena);
  }
  SetKernelThreads(threads);
  std::vector<float> x(kCols, 0.01f), y(static_cast<size_t>(rows));
  MatMul(x.data(), 1, w, y.data());  // warm: the weight into the caches
  double best = 0;
  for (int window = 0; window < 10; ++window) {
    int64_t calls = 0;
    const Clock::time_point start = Clock::now();
    double elapsed = 0;
    while (elapsed < 0.05) {
      MatMul(x.data(), 1, w, y.data());
      ++calls;
      elapsed = Seconds(start);
    }
    best = std::max(best, calls / elapsed);
  }
  return static_cast<double>(w.bytes()) * best;
}

// ---- what a token costs -----------------------------------------------------------------------

int64_t MlpBytes(const MlpWeights& m) {
  return m.gate_proj.bytes() + m.up_proj.bytes() + m.down_proj.bytes();
}

// Weight bytes one decode token reads, in their stored dtype: its embedding row, every layer's
// attention and norms, the dense MLP or the gate + shared experts + the num_experts_per_tok
// routed experts it selects, the final norm and lm_head.
int64_t WeightBytesPerDecodeToken(const DeepseekV3Model& model) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  int64_t bytes = w.embed_tokens.bytes() / c.vocab_size;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    bytes += (lw.input_layernorm.size() + lw.post_attention_layernorm.size() +
              lw.q_a_layernorm.size() + lw.kv_a_layernorm.size()) * sizeof(float);
    bytes += lw.q_a_proj.bytes() + lw.q_b_proj.bytes() + lw.q_proj.bytes() +
             lw.kv_a_proj_with_mqa.bytes() + lw.kv_b_proj.bytes() + lw.o_proj.bytes();
    if (!c.is_moe_layer(l)) {
      bytes += MlpBytes(lw.mlp);
      continue;
    }
    bytes += lw.gate.bytes() + lw.e_score_correction_bias.size() * sizeof(float);
    if (lw.has_shared_experts) bytes += MlpBytes(lw.shared_experts);
    bytes += c.num_experts_per_tok * MlpBytes(lw.experts.front());
  }
  return bytes + w.norm.size() * sizeof(float) + w.lm_head.bytes();
}

// FLOPs of prefilling `n` tokens (logits for the last only), counting only work the math needs:
// 2 per weight a token multiplies (its active experts, not all), causal attention scores and
// values per head over the positions each query sees, and lm_head once.
double PrefillFlops(const ModelConfig& c, int64_t n) {
  const double h = c.hidden_size, heads = c.num_attention_heads;
  double per_token = 0;  // weights each token multiplies
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    per_token += c.q_lora_rank > 0
                     ? c.q_lora_rank * h + heads * c.qk_head_dim() * c.q_lora_rank
                     : heads * c.qk_head_dim() * h;
    per_token += c.kv_cache_dim() * h +
                 heads * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank +
                 h * heads * c.v_head_dim;
    if (!c.is_moe_layer(l)) {
      per_token += 3 * h * c.intermediate_size;
    } else {
      per_token += c.n_routed_experts * h +
                   3 * h * c.moe_intermediate_size * (c.n_shared_experts + c.num_experts_per_tok);
    }
  }
  // Query i attends to i + 1 positions: Σ (i+1) = n(n+1)/2 score dot products and value sums.
  const double pairs = 0.5 * n * (n + 1);
  const double attention =
      c.num_hidden_layers * heads * pairs * 2.0 * (c.qk_head_dim() + c.v_head_dim);
  return 2.0 * per_token * n + attention + 2.0 * c.vocab_size * h;
}

// ---- engine runs ------------------------------------------------------------------------------

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return tokens;
}

struct Engine {
  std::unique_ptr<DeepseekV3Model> model;
  std::unique_ptr<Communicator> comm = MakeSingleRankCommunicator();
  ForwardOptions options;
};

// Seconds of one prefill of `n` tokens into a fresh sequence.
absl::StatusOr<double> TimePrefill(Engine& e, int64_t n) {
  ASSIGN_OR_RETURN(KvCache cache, e.model->MakeKvCache(n * e.model->config().num_hidden_layers *
                                                           e.model->config().kv_cache_dim() * 4 +
                                                       (int64_t{8} << 20)));
  KvBlockTable kv;
  RETURN_IF_ERROR(cache.Reserve(kv, n));
  const std::vector<int32_t> tokens = RandomTokens(n, e.model->config().vocab_size, 1);
  SequenceStep step{tokens, 0, &kv, false};
  std::vector<float> logits;
  const Clock::time_point start = Clock::now();
  RETURN_IF_ERROR(e.model->Forward({&step, 1}, cache, *e.comm, e.options, &logits));
  return Seconds(start);
}

// Segments per decode measurement: each runs min_seconds / kDecodeSegments.
constexpr int kDecodeSegments = 3;

// Decode tokens/s with `batch` sequences each prefilled with `context` tokens, one new token per
// sequence per step: two warm-up steps, then the best of `segments` segments of min_seconds /
// kDecodeSegments (at most kSegmentSteps steps), each starting again from the same context length.
absl::StatusOr<double> DecodeRate(Engine& e, int64_t batch, int64_t context, double min_seconds,
                                  int segments = kDecodeSegments) {
  const ModelConfig& c = e.model->config();
  constexpr int64_t kSegmentSteps = 80;
  const int64_t base = context + 2;
  ASSIGN_OR_RETURN(KvCache cache,
                   e.model->MakeKvCache(batch * (base + kSegmentSteps + 16) * c.num_hidden_layers *
                                        c.kv_cache_dim() * 4));
  std::vector<KvBlockTable> kv(static_cast<size_t>(batch));
  std::vector<std::vector<int32_t>> prompts;
  std::vector<SequenceStep> steps;
  for (int64_t b = 0; b < batch; ++b) {
    RETURN_IF_ERROR(cache.Reserve(kv[b], base + kSegmentSteps));
    prompts.push_back(RandomTokens(context, c.vocab_size, 100 + b));
  }
  for (int64_t b = 0; b < batch; ++b) steps.push_back({prompts[b], 0, &kv[b], false});
  std::vector<float> logits;
  RETURN_IF_ERROR(e.model->Forward(steps, cache, *e.comm, e.options, &logits));
  // Greedy continuation: each step feeds the argmax of the previous logits.
  std::vector<int32_t> next(static_cast<size_t>(batch));
  auto step = [&]() -> absl::Status {
    for (int64_t b = 0; b < batch; ++b) {
      const float* row = logits.data() + b * c.vocab_size;
      next[b] = static_cast<int32_t>(std::max_element(row, row + c.vocab_size) - row);
      steps[b] = {absl::Span<const int32_t>(&next[b], 1), kv[b].num_tokens, &kv[b], false};
    }
    return e.model->Forward(steps, cache, *e.comm, e.options, &logits);
  };
  for (int i = 0; i < 2; ++i) RETURN_IF_ERROR(step());
  double best = 0;
  for (int segment = 0; segment < segments; ++segment) {
    ASSIGN_OR_RETURN(QuietResult rate, Quietly([&]() -> absl::StatusOr<double> {
      for (KvBlockTable& table : kv) table.num_tokens = base;  // rewind: the same context again
      const Clock::time_point start = Clock::now();
      int64_t done = 0;
      double seconds = 0;
      while (seconds < min_seconds / kDecodeSegments && done < kSegmentSteps) {
        RETURN_IF_ERROR(step());
        ++done;
        seconds = Seconds(start);
      }
      return static_cast<double>(done * batch) / seconds;
    }));
    best = std::max(best, rate.value);
  }
  return best;
}

absl::StatusOr<std::vector<int64_t>> ParseList(const std::string& text, const char* flag) {
  std::vector<int64_t> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", part, "\" is not a count"));
    }
    values.push_back(v);
  }
  return values;
}

absl::StatusOr<DType> ParseWeightDType(absl::string_view name) {
  if (name == "bf16") return DType::kBF16;
  if (name == "fp8") return DType::kF8E4M3;
  if (name == "f32") return DType::kF32;
  return absl::InvalidArgumentError(absl::StrCat("--dtypes: \"", name, "\" is not bf16, fp8 or f32"));
}

absl::StatusOr<std::string> EnsureCheckpoint(const std::string& name, DType dtype) {
  const std::string dir =
      (std::filesystem::path(absl::GetFlag(FLAGS_cache_dir)) / ("small-" + name)).string();
  if (std::filesystem::exists(std::filesystem::path(dir) / "config.json")) return dir;
  std::fprintf(stderr, "making %s ...\n", dir.c_str());
  MakeModelOptions options;
  options.preset = "small";
  options.dtype = dtype;
  options.seed = 1;
  options.out_dir = dir + ".partial";
  std::filesystem::remove_all(options.out_dir);
  RETURN_IF_ERROR(MakeModel(options));
  std::filesystem::rename(options.out_dir, dir);
  return dir;
}

std::string Rate(double v) { return absl::StrFormat("%.1f", v); }
std::string Percent(double v) { return absl::StrFormat("%.0f%%", 100 * v); }

// One engine measurement; batch 0 is the prefill.
struct Measurement {
  std::string weights;
  int64_t threads;
  int64_t batch;
  double tokens_per_second;
};

struct Limits {
  std::vector<double> bandwidth, peak;  // per thread count: bytes/s, FLOP/s
  std::vector<double> fp8_cached, bf16_cached;  // per thread count: KernelFromCache, bytes/s
};

Limits MeasureLimits(const std::vector<int64_t>& thread_counts) {
  Limits limits;
  if (!absl::GetFlag(FLAGS_measure_limits)) {  // zeros: not measured
    limits.bandwidth.assign(thread_counts.size(), 0.0);
    limits.peak.assign(thread_counts.size(), 0.0);
    limits.fp8_cached.assign(thread_counts.size(), 0.0);
    limits.bf16_cached.assign(thread_counts.size(), 0.0);
    return limits;
  }
  for (int64_t t : thread_counts) {
    const int threads = static_cast<int>(t);
    auto bandwidth = Quietly([&]() -> absl::StatusOr<double> { return ReadBandwidth(threads); });
    auto peak = Quietly([&]() -> absl::StatusOr<double> { return SgemmPeak(threads); });
    limits.bandwidth.push_back(bandwidth->value);
    limits.peak.push_back(peak->value);
    for (DType dtype : {DType::kF8E4M3, DType::kBF16}) {
      auto cached =
          Quietly([&]() -> absl::StatusOr<double> { return KernelFromCache(dtype, threads); });
      (dtype == DType::kF8E4M3 ? limits.fp8_cached : limits.bf16_cached).push_back(cached->value);
    }
  }
  return limits;
}

absl::Status Run() {
  ASSIGN_OR_RETURN(std::vector<int64_t> thread_counts,
                   ParseList(absl::GetFlag(FLAGS_threads), "threads"));
  ASSIGN_OR_RETURN(std::vector<int64_t> batches, ParseList(absl::GetFlag(FLAGS_batches), "batches"));
  const int64_t prefill_tokens = absl::GetFlag(FLAGS_prefill_tokens);
  const int64_t context = absl::GetFlag(FLAGS_decode_context);
  const double min_seconds = absl::GetFlag(FLAGS_min_seconds);
  if (absl::GetFlag(FLAGS_rounds) < 1 || absl::GetFlag(FLAGS_repeats) < 1) {
    return absl::InvalidArgumentError("--rounds and --repeats must be at least 1");
  }
  std::printf("SIMD %s, %d cores, decode after a %lld-token prefill per sequence\n",
              SimdLevel(), omp_get_num_procs(), static_cast<long long>(context));
  std::fflush(stdout);

  // Limits before and after the engine runs; the better of the two counts, so a neighbour's
  // load during one measurement cannot flatter the ratios.
  const Limits before = MeasureLimits(thread_counts);
  std::map<std::string, int64_t> bytes_per_token;
  double prefill_flops = 0;
  std::vector<std::string> names;
  std::vector<Engine> engines;
  for (absl::string_view dtype_name : absl::StrSplit(absl::GetFlag(FLAGS_dtypes), ',')) {
    const std::string weights(dtype_name);
    ASSIGN_OR_RETURN(DType dtype, ParseWeightDType(weights));
    ASSIGN_OR_RETURN(std::string dir, EnsureCheckpoint(weights, dtype));
    Engine e;
    ASSIGN_OR_RETURN(e.model, DeepseekV3Model::Load(dir));
    bytes_per_token[weights] = WeightBytesPerDecodeToken(*e.model);
    prefill_flops = PrefillFlops(e.model->config(), prefill_tokens);
    names.push_back(weights);
    engines.push_back(std::move(e));
  }
  // Every measurement once per round, rounds one after another, the best of each kept: the
  // machine's speed drifts over minutes (shared host), and a ratio between two measurements is
  // only as good as their exposure to the same conditions.
  std::vector<Measurement> results;
  auto keep = [&results](Measurement m) {
    for (Measurement& r : results) {
      if (r.weights == m.weights && r.threads == m.threads && r.batch == m.batch) {
        r.tokens_per_second = std::max(r.tokens_per_second, m.tokens_per_second);
        return;
      }
    }
    results.push_back(std::move(m));
  };
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (size_t d = 0; d < engines.size(); ++d) {
      Engine& e = engines[d];
      for (int64_t threads : thread_counts) {
        SetKernelThreads(static_cast<int>(threads));
        if (prefill_tokens > 0) {
          for (int r = 0; r < absl::GetFlag(FLAGS_repeats); ++r) {
            ASSIGN_OR_RETURN(QuietResult rate, Quietly([&]() -> absl::StatusOr<double> {
              ASSIGN_OR_RETURN(double seconds, TimePrefill(e, prefill_tokens));
              return prefill_tokens / seconds;
            }));
            keep({names[d], threads, 0, rate.value});
          }
        }
        for (int64_t b : batches) {
          ASSIGN_OR_RETURN(double rate, DecodeRate(e, b, context, min_seconds));
          keep({names[d], threads, b, rate});
        }
      }
    }
    std::fprintf(stderr, "round %d of %d done\n", round + 1, absl::GetFlag(FLAGS_rounds));
  }
  // The FP8/BF16 batch-1 ratio from segments measured back to back, in ABBA order, so that the
  // machine's drift (its read bandwidth moves by ±10% over minutes here) falls on both sides of
  // each pair; best-of-rounds ratios compare measurements minutes apart.
  struct PairedRatio {
    double median = 0, low = 0, high = 0;
    int pairs = 0;
  };
  std::map<int64_t, PairedRatio> paired;  // by thread count
  const auto bf16_engine = std::find(names.begin(), names.end(), "bf16");
  const auto fp8_engine = std::find(names.begin(), names.end(), "fp8");
  if (absl::GetFlag(FLAGS_ratio_pairs) > 0 && bf16_engine != names.end() &&
      fp8_engine != names.end() && std::find(batches.begin(), batches.end(), 1) != batches.end()) {
    Engine& bf16 = engines[bf16_engine - names.begin()];
    Engine& fp8 = engines[fp8_engine - names.begin()];
    for (int64_t threads : thread_counts) {
      SetKernelThreads(static_cast<int>(threads));
      std::vector<double> ratios;
      for (int p = 0; p < absl::GetFlag(FLAGS_ratio_pairs); ++p) {
        double rate[2];  // bf16, fp8
        for (int k = 0; k < 2; ++k) {
          const int which = (p % 2 == 0) == (k == 0) ? 0 : 1;
          ASSIGN_OR_RETURN(rate[which],
                           DecodeRate(which == 0 ? bf16 : fp8, 1, context, min_seconds, 1));
        }
        ratios.push_back(rate[1] / rate[0]);
      }
      std::sort(ratios.begin(), ratios.end());
      const size_t n = ratios.size();
      paired[threads] = {n % 2 == 1 ? ratios[n / 2] : (ratios[n / 2 - 1] + ratios[n / 2]) / 2,
                         ratios.front(), ratios.back(), static_cast<int>(n)};
    }
  }
  const Limits after = MeasureLimits(thread_counts);
  Limits limits;
  for (size_t i = 0; i < thread_counts.size(); ++i) {
    limits.bandwidth.push_back(std::max(before.bandwidth[i], after.bandwidth[i]));
    limits.peak.push_back(std::max(before.peak[i], after.peak[i]));
  }

  const bool measured = absl::GetFlag(FLAGS_measure_limits);
  if (measured) {
    std::printf("\n| threads | read bandwidth GB/s (before / after) | OpenBLAS sgemm 2048³ "
                "GFLOP/s (before / after) | batch-1 kernel from cache, GB/s of FP8 / BF16 weights "
                "(before / after) |\n|---|---|---|---|\n");
  }
  for (size_t i = 0; i < thread_counts.size() && measured; ++i) {
    std::printf("| %lld | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f (before), %.1f / %.1f "
                "(after) |\n",
                static_cast<long long>(thread_counts[i]), before.bandwidth[i] / 1e9,
                after.bandwidth[i] / 1e9, before.peak[i] / 1e9, after.peak[i] / 1e9,
                before.fp8_cached[i] / 1e9, before.bf16_cached[i] / 1e9,
                after.fp8_cached[i] / 1e9, after.bf16_cached[i] / 1e9);
  }
  for (const auto& [weights, bytes] : bytes_per_token) {
    std::printf("\n%s: %.1f MB of weights read per decode token", weights.c_str(), bytes / 1e6);
  }
  std::printf("\nprefill of %lld tokens: %.1f GFLOP\n\n", static_cast<long long>(prefill_tokens),
              prefill_flops / 1e9);

  auto find = [&](const std::string& weights, int64_t threads, int64_t batch) -> double {
    for (const Measurement& m : results) {
      if (m.weights == weights && m.threads == threads && m.batch == batch) {
        return m.tokens_per_second;
      }
    }
    return 0;
  };
  std::printf("| weights | threads | measurement | tokens/s | limit or base (same run) | ratio "
              "| goal |\n|---|---|---|---|---|---|---|\n");
  for (const Measurement& m : results) {
    const size_t ti = static_cast<size_t>(
        std::find(thread_counts.begin(), thread_counts.end(), m.threads) - thread_counts.begin());
    std::string what, limit, ratio, goal;
    if (m.batch == 0) {
      const double flops = prefill_flops * m.tokens_per_second / prefill_tokens;
      what = absl::StrCat("prefill ", prefill_tokens);
      limit = measured ? absl::StrCat("sgemm ", Rate(limits.peak[ti] / 1e9), " GFLOP/s (engine ",
                                      Rate(flops / 1e9), ")")
                       : absl::StrCat("sgemm not measured (engine ", Rate(flops / 1e9), ")");
      ratio = measured ? Percent(flops / limits.peak[ti]) : "-";
      goal = "≥ 60%";
    } else if (m.batch == 1) {
      const double bound = limits.bandwidth[ti] / bytes_per_token[m.weights];
      what = "decode batch 1";
      limit = measured ? absl::StrCat(Rate(bound), " tok/s = ", Rate(limits.bandwidth[ti] / 1e9),
                                      " GB/s ÷ ", Rate(bytes_per_token[m.weights] / 1e6), " MB")
                       : "bandwidth not measured";
      ratio = measured ? Percent(m.tokens_per_second / bound) : "-";
      goal = m.weights == "bf16" ? "≥ 85%" : "";
      const double bf16 = find("bf16", m.threads, 1);
      if (m.weights == "fp8" && bf16 > 0) {
        const auto pair = paired.find(m.threads);
        if (pair != paired.end()) {
          absl::StrAppend(&ratio, "; ",
                          absl::StrFormat("%.2f× bf16 batch 1 (median of %d back-to-back pairs, "
                                          "%.2f–%.2f; best of rounds %.2f×)",
                                          pair->second.median, pair->second.pairs,
                                          pair->second.low, pair->second.high,
                                          m.tokens_per_second / bf16));
        } else {
          absl::StrAppend(&ratio, "; ", absl::StrFormat("%.2f×", m.tokens_per_second / bf16),
                          " bf16 batch 1 (best of rounds)");
        }
        goal = "≥ 1.6× bf16";
      }
    } else {
      const double bf16 = find("bf16", m.threads, 1);
      what = absl::StrCat("decode batch ", m.batch);
      limit = absl::StrCat("bf16 batch 1: ", Rate(bf16), " tok/s");
      ratio = bf16 > 0 ? absl::StrFormat("%.2f×", m.tokens_per_second / bf16) : "-";
      goal = m.batch == 32 ? "≥ 4.5×" : "";
    }
    std::printf("| %s | %lld | %s | %.1f | %s | %s | %s |\n", m.weights.c_str(),
                static_cast<long long>(m.threads), what.c_str(), m.tokens_per_second,
                limit.c_str(), ratio.c_str(), goal.c_str());
  }
  std::printf("\n%d measurements were repeated because other processes used over 3%% of the CPUs "
              "meanwhile; %d never ran clean (their best is shown).\n",
              g_repeated, g_unclean);
  return absl::OkStatus();
}

}  // namespace
}  // namespace epinfer

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = epinfer::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
