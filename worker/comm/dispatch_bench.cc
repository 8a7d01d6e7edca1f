// ExpertDispatcher::Dispatch + Combine over UCX for one MoE layer, one process per rank (a
// benchmark, not a test; tools/bench_ep.sh runs it beside ucx_perftest):
//   dispatch_bench --rank=R --size=N --rendezvous=DIR [--tokens=128] [--iters=200] [--threads=1]
// Each rank routes its tokens to random top-k experts (uniform over the routed experts, placed
// contiguously over the ranks), dispatches, runs identity experts (each received row's output is
// the gate-weighted sum of its own activations) and combines. Rank 0 prints one line,
//   RESULT key=value ...
// with the step latency (the slowest rank's dispatch + combine, per iteration), the bytes each
// rank sends to its peers, and the same message sizes through Communicator::AllToAllV alone.
// Exit 0: ran; 3: a collective failed or the combined output is wrong.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "worker/comm/rendezvous.h"
#include "worker/comm/transport.h"
#include "worker/comm/ucx.h"
#include "worker/kernels/linear.h"
#include "worker/model/moe.h"
#include "worker/model/placement.h"

ABSL_FLAG(int, rank, 0, "this rank");
ABSL_FLAG(int, size, 2, "group size (EP ranks)");
ABSL_FLAG(std::string, rendezvous, "", "rendezvous directory shared by the ranks");
ABSL_FLAG(std::string, transport, "ucx", "ucx, or nccl in builds with CUDA");
ABSL_FLAG(int, lanes, 1, "ucx: UCP workers per rank, each driven by one of the --threads");
ABSL_FLAG(int64_t, tokens, 128, "tokens per rank per step (128: decode-sized, 4096: prefill)");
ABSL_FLAG(int64_t, hidden, 7168, "hidden_size (DeepSeek-V3: 7168)");
ABSL_FLAG(int, top_k, 8, "num_experts_per_tok");
ABSL_FLAG(int, experts, 256, "n_routed_experts, placed contiguously over the ranks");
ABSL_FLAG(std::string, dispatch_dtype, "fp8", "dispatch activations: f32, bf16 or fp8");
ABSL_FLAG(std::string, combine_dtype, "bf16", "combine activations: f32 or bf16");
ABSL_FLAG(int, iters, 200, "timed iterations");
ABSL_FLAG(int, warmup, 10, "untimed iterations first (the first one checks the output)");
ABSL_FLAG(uint64_t, seed, 1, "routing and activation seed");
ABSL_FLAG(int, timeout_s, 120, "deadline of each collective");
ABSL_FLAG(int, threads, 1,
          "kernel threads per rank for the codec's row loops (0: all cores); 1 is the layout of "
          "`epinfer --ep N --threads 1`, ranks on shared cores");

namespace epinfer {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point begin, Clock::time_point end) {
  return std::chrono::duration<double>(end - begin).count();
}

absl::StatusOr<DType> ParseActivationDType(const std::string& name) {
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "fp8") return DType::kF8E4M3;
  return absl::InvalidArgumentError(absl::StrCat("activation dtype \"", name,
                                                 "\": expected f32, bf16 or fp8"));
}

// top_k distinct experts per token, uniform; gate weights positive and summing to 1 (as after
// DeepSeek-V3's norm_topk_prob), so a correct dispatch/combine of identity experts returns x.
void RandomRouting(std::mt19937_64& rng, int64_t num_tokens, int top_k, int num_experts,
                   std::vector<int32_t>* experts, std::vector<float>* weights) {
  experts->resize(static_cast<size_t>(num_tokens * top_k));
  weights->resize(experts->size());
  std::uniform_int_distribution<int32_t> pick(0, num_experts - 1);
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  for (int64_t t = 0; t < num_tokens; ++t) {
    int32_t* e = experts->data() + t * top_k;
    float* w = weights->data() + t * top_k;
    float total = 0;
    for (int j = 0; j < top_k; ++j) {
      do {
        e[j] = pick(rng);
      } while (std::find(e, e + j, e[j]) != e + j);
      w[j] = weight(rng);
      total += w[j];
    }
    for (int j = 0; j < top_k; ++j) w[j] /= total;
  }
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(values.size()))) - 1;
  return values[std::min(i, values.size() - 1)];
}

// Per timed iteration, on this rank.
struct Sample {
  double dispatch_s = 0;       // Dispatch(): encode + all-to-all + decode
  double combine_s = 0;        // Combine(): encode + all-to-all + decode-and-add
  double wire_s = 0;           // the two AllToAllV calls inside Dispatch() and Combine()
  double a2a_s = 0;            // the communicator alone: AllToAllV of the same message sizes
  double dispatch_bytes = 0;   // sent to peers (not to itself)
  double combine_bytes = 0;
  double dispatch_messages = 0;  // peers with a non-empty message
  double combine_messages = 0;
};
constexpr int kSampleFields = sizeof(Sample) / sizeof(double);

absl::Status Run() {
  const int rank = absl::GetFlag(FLAGS_rank), size = absl::GetFlag(FLAGS_size);
  const int64_t tokens = absl::GetFlag(FLAGS_tokens), hidden = absl::GetFlag(FLAGS_hidden);
  const int top_k = absl::GetFlag(FLAGS_top_k), num_experts = absl::GetFlag(FLAGS_experts);
  const int iters = absl::GetFlag(FLAGS_iters), warmup = absl::GetFlag(FLAGS_warmup);
  const absl::Duration timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  if (absl::GetFlag(FLAGS_rendezvous).empty()) {
    return absl::InvalidArgumentError("--rendezvous is required");
  }
  if (tokens < 0 || hidden < 1 || top_k < 1 || top_k > num_experts || iters < 1 || warmup < 1 ||
      absl::GetFlag(FLAGS_threads) < 0) {
    return absl::InvalidArgumentError(
        "--tokens >= 0, --hidden >= 1, 1 <= --top_k <= --experts, --iters >= 1, --warmup >= 1, "
        "--threads >= 0");
  }
  SetKernelThreads(absl::GetFlag(FLAGS_threads));
  MoeTransportOptions transport;
  ASSIGN_OR_RETURN(transport.dispatch, ParseActivationDType(absl::GetFlag(FLAGS_dispatch_dtype)));
  ASSIGN_OR_RETURN(transport.combine, ParseActivationDType(absl::GetFlag(FLAGS_combine_dtype)));
  if (transport.combine == DType::kF8E4M3) {
    return absl::InvalidArgumentError("--combine_dtype: f32 or bf16");
  }
  ASSIGN_OR_RETURN(ExpertPlacement placement,
                   ExpertPlacement::Contiguous(1, {true}, num_experts, size));
  const LayerPlacement& layer = placement.layers[0];

  auto rendezvous = MakeFileRendezvous(absl::GetFlag(FLAGS_rendezvous), "dispatch_bench");
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                   MakeProcessCommunicator(absl::GetFlag(FLAGS_transport), rank, size, *rendezvous,
                                           absl::Now() + absl::Seconds(60),
                                           absl::GetFlag(FLAGS_lanes)));

  // N(0, 1) activations, like a post-RMSNorm hidden state: f32 [tokens, hidden].
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed) * 1000003 + static_cast<uint64_t>(rank));
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(tokens * hidden));
  for (float& v : x) v = normal(rng);
  std::vector<float> out(x.size()), sums, row_weight;
  std::vector<int32_t> experts;
  std::vector<float> weights;
  std::vector<Sample> samples;
  std::vector<int64_t> dispatch_sizes, combine_sizes;  // [peer] bytes of the last timed step

  for (int it = 0; it < warmup + iters; ++it) {
    RandomRouting(rng, tokens, top_k, num_experts, &experts, &weights);
    const DispatchLayout layout =
        BuildDispatchLayout(experts.data(), weights.data(), tokens, top_k, layer, comm->rank());
    // A fresh dispatcher per step, as RunMoe makes one per MoE layer.
    ExpertDispatcher dispatcher(*comm, transport, hidden, top_k, layer.slots_per_rank);
    std::fill(out.begin(), out.end(), 0.0f);
    RETURN_IF_ERROR(comm->Barrier(absl::Now() + timeout));

    const Clock::time_point t0 = Clock::now();
    RETURN_IF_ERROR(dispatcher.Dispatch(x.data(), layout, absl::Now() + timeout));
    const Clock::time_point t1 = Clock::now();
    const double dispatch_wire_s = dispatcher.stats().dispatch_seconds;
    std::vector<int64_t> sent_after_dispatch = dispatcher.stats().bytes_sent_to;

    // Identity experts: every received row's output is its own activations times the sum of its
    // gate weights on this rank.
    const int64_t received = dispatcher.num_received();
    row_weight.assign(static_cast<size_t>(received), 0.0f);
    for (const auto& rows : dispatcher.rows_of_slot()) {
      for (const auto& [row, w] : rows) row_weight[row] += w;
    }
    sums.resize(static_cast<size_t>(received * hidden));
    for (int64_t r = 0; r < received; ++r) {
      const float* in = dispatcher.received_rows() + r * hidden;
      float* o = sums.data() + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) o[i] = row_weight[r] * in[i];
    }
    RETURN_IF_ERROR(comm->Barrier(absl::Now() + timeout));

    const Clock::time_point t2 = Clock::now();
    RETURN_IF_ERROR(dispatcher.Combine(sums.data(), layout, absl::Now() + timeout, out.data()));
    const Clock::time_point t3 = Clock::now();

    if (it == 0) {
      // The gate weights sum to 1, so out ≈ x within FP8/BF16 rounding (e4m3 keeps 3 mantissa
      // bits: relative error ≤ 2^-4, plus the per-128-channel scale's underflow near zero).
      double worst = 0;
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t i = 0; i < hidden; ++i) {
          const float want = x[t * hidden + i], got = out[t * hidden + i];
          worst = std::max(worst, std::fabs(got - want) / (std::fabs(want) + 0.02));
        }
      }
      if (worst > 0.08) {
        return absl::DataLossError(absl::StrCat("combined output differs from the input by ",
                                                worst, " (relative) on rank ", rank));
      }
    }
    if (it < warmup) continue;
    Sample s;
    s.dispatch_s = Seconds(t0, t1);
    s.combine_s = Seconds(t2, t3);
    s.wire_s = dispatch_wire_s + dispatcher.stats().combine_seconds;
    for (int p = 0; p < size; ++p) {
      if (p == rank) continue;
      const int64_t dispatched = sent_after_dispatch[p];
      const int64_t combined = dispatcher.stats().bytes_sent_to[p] - dispatched;
      s.dispatch_bytes += static_cast<double>(dispatched);
      s.combine_bytes += static_cast<double>(combined);
      s.dispatch_messages += dispatched > 0;
      s.combine_messages += combined > 0;
    }
    samples.push_back(s);
    dispatch_sizes = sent_after_dispatch;
    combine_sizes = dispatcher.stats().bytes_sent_to;
    for (int p = 0; p < size; ++p) combine_sizes[p] -= dispatch_sizes[p];
  }

  // The communicator alone, with the last step's message sizes, buffers reused and no encoding:
  // what separates the dispatcher's own cost from the transport's.
  std::vector<std::vector<uint8_t>> dispatch_send(size), combine_send(size), received;
  std::vector<absl::Span<const uint8_t>> dispatch_spans, combine_spans;
  for (int p = 0; p < size; ++p) {
    dispatch_send[p].assign(static_cast<size_t>(dispatch_sizes[p]), 1);
    combine_send[p].assign(static_cast<size_t>(combine_sizes[p]), 2);
    dispatch_spans.emplace_back(dispatch_send[p]);
    combine_spans.emplace_back(combine_send[p]);
  }
  for (Sample& s : samples) {
    RETURN_IF_ERROR(comm->Barrier(absl::Now() + timeout));
    const Clock::time_point t0 = Clock::now();
    RETURN_IF_ERROR(comm->AllToAllV(dispatch_spans, &received, absl::Now() + timeout));
    const Clock::time_point t1 = Clock::now();
    RETURN_IF_ERROR(comm->Barrier(absl::Now() + timeout));
    const Clock::time_point t2 = Clock::now();
    RETURN_IF_ERROR(comm->AllToAllV(combine_spans, &received, absl::Now() + timeout));
    s.a2a_s = Seconds(t0, t1) + Seconds(t2, Clock::now());
  }

  std::vector<uint8_t> all;
  RETURN_IF_ERROR(comm->AllGather(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(samples.data()),
                                samples.size() * sizeof(Sample)),
      &all, absl::Now() + timeout));
  if (rank != 0) return absl::OkStatus();
  static_assert(sizeof(Sample) == kSampleFields * sizeof(double));
  std::vector<Sample> by_rank(static_cast<size_t>(size) * iters);
  std::memcpy(by_rank.data(), all.data(), all.size());

  // A step ends when its slowest rank ends: latency per iteration is the max over ranks.
  std::vector<double> step, dispatch, combine, wire, codec, a2a;
  double dispatch_bytes = 0, combine_bytes = 0, dispatch_msgs = 0, combine_msgs = 0;
  for (int it = 0; it < iters; ++it) {
    double step_s = 0, dispatch_s = 0, combine_s = 0, wire_s = 0, codec_s = 0, a2a_s = 0;
    for (int r = 0; r < size; ++r) {
      const Sample& s = by_rank[static_cast<size_t>(r) * iters + it];
      step_s = std::max(step_s, s.dispatch_s + s.combine_s);
      dispatch_s = std::max(dispatch_s, s.dispatch_s);
      combine_s = std::max(combine_s, s.combine_s);
      wire_s = std::max(wire_s, s.wire_s);
      a2a_s = std::max(a2a_s, s.a2a_s);
      codec_s = std::max(codec_s, s.dispatch_s + s.combine_s - s.wire_s);
      dispatch_bytes += s.dispatch_bytes;
      combine_bytes += s.combine_bytes;
      dispatch_msgs += s.dispatch_messages;
      combine_msgs += s.combine_messages;
    }
    step.push_back(step_s);
    dispatch.push_back(dispatch_s);
    combine.push_back(combine_s);
    wire.push_back(wire_s);
    codec.push_back(codec_s);
    a2a.push_back(a2a_s);
  }
  const double rank_steps = static_cast<double>(size) * iters;
  const double bytes = (dispatch_bytes + combine_bytes) / rank_steps;  // per rank per step, to peers
  const double p50 = Percentile(step, 0.5), wire_p50 = Percentile(wire, 0.5);
  const double a2a_p50 = Percentile(a2a, 0.5);
  std::cout << "RESULT ranks=" << size << " tokens_per_rank=" << tokens << " hidden=" << hidden
            << " top_k=" << top_k << " experts=" << num_experts
            << " dispatch=" << absl::GetFlag(FLAGS_dispatch_dtype)
            << " combine=" << absl::GetFlag(FLAGS_combine_dtype) << " iters=" << iters
            << " p50_us=" << p50 * 1e6 << " p90_us=" << Percentile(step, 0.9) * 1e6
            << " dispatch_p50_us=" << Percentile(dispatch, 0.5) * 1e6
            << " combine_p50_us=" << Percentile(combine, 0.5) * 1e6
            << " wire_p50_us=" << wire_p50 * 1e6 << " wire_p90_us=" << Percentile(wire, 0.9) * 1e6
            << " codec_p50_us=" << Percentile(codec, 0.5) * 1e6
            << " a2a_p50_us=" << a2a_p50 * 1e6 << " a2a_p90_us=" << Percentile(a2a, 0.9) * 1e6
            << " bytes_per_rank=" << static_cast<int64_t>(bytes)
            << " dispatch_bytes_per_rank=" << static_cast<int64_t>(dispatch_bytes / rank_steps)
            << " combine_bytes_per_rank=" << static_cast<int64_t>(combine_bytes / rank_steps)
            << " dispatch_msg_bytes="
            << static_cast<int64_t>(dispatch_msgs > 0 ? dispatch_bytes / dispatch_msgs : 0)
            << " combine_msg_bytes="
            << static_cast<int64_t>(combine_msgs > 0 ? combine_bytes / combine_msgs : 0)
            << " peer_msgs_per_rank=" << (dispatch_msgs + combine_msgs) / rank_steps
            << " gbps=" << (p50 > 0 ? bytes / p50 / 1e9 : 0)
            << " wire_gbps=" << (wire_p50 > 0 ? bytes / wire_p50 / 1e9 : 0)
            << " a2a_gbps=" << (a2a_p50 > 0 ? bytes / a2a_p50 / 1e9 : 0) << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace epinfer

int main(int argc, char** argv) {
  epinfer::PrepareUcxEnvironment();
  epinfer::ParseFlagsOrExit(argc, argv, "--rank R --size N --rendezvous DIR [--tokens T]");
  const absl::Status status = epinfer::Run();
  if (status.ok()) return 0;
  std::cerr << "dispatch_bench rank " << absl::GetFlag(FLAGS_rank) << ": " << status << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 3;
}
