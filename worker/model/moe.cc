#include "worker/model/moe.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/kernels/activation_codec.h"
#include "worker/kernels/linear.h"
#include "worker/kernels/ops.h"
#include "worker/model/gate.h"

namespace epinfer {

void RunMlp(const MlpWeights& w, const float* x, int64_t n, float* y) {
  const MlpJob job{&w, x, n, y};
  RunMlps({&job, 1});
}

void RunMlps(absl::Span<const MlpJob> jobs, absl::Span<const MatMulJob> alongside) {
  // gate and up of every MLP (and the `alongside` products) in one batch, then every down product,
  // each as soon as its own MLP's gate and up are done and SiLU(gate) · up is taken
  // (MatMulBatchThen): at decode one parallel region however many experts, where one per product
  // cost each step dozens of fork/joins and their load imbalance.
  std::vector<int64_t> offset(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    offset[j + 1] = offset[j] + jobs[j].n * jobs[j].w->gate_proj.rows;
  }
  std::vector<float> gate(static_cast<size_t>(offset.back())), up(gate.size());
  std::vector<MatMulJob> first(alongside.begin(), alongside.end()), second;
  std::vector<std::vector<size_t>> after;
  std::vector<size_t> mlp_of;  // the MLP of each down product
  first.reserve(alongside.size() + 2 * jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const MlpJob& m = jobs[j];
    if (m.n == 0) continue;
    after.push_back({first.size(), first.size() + 1});
    first.push_back({m.x, m.n, &m.w->gate_proj, gate.data() + offset[j]});
    first.push_back({m.x, m.n, &m.w->up_proj, up.data() + offset[j]});
    second.push_back({gate.data() + offset[j], m.n, &m.w->down_proj, m.y});
    mlp_of.push_back(j);
  }
  MatMulBatchThen(first, second, after, [&](size_t d) {
    const size_t j = mlp_of[d];
    SiluMul(gate.data() + offset[j], up.data() + offset[j], offset[j + 1] - offset[j],
            gate.data() + offset[j]);
  });
}

DispatchLayout BuildDispatchLayout(const int32_t* experts, const float* weights,
                                   int64_t num_tokens, int32_t top_k,
                                   const LayerPlacement& placement, int32_t source_rank) {
  DispatchLayout layout;
  layout.num_ranks = placement.num_ranks;
  layout.top_k = top_k;
  layout.num_tokens = num_tokens;
  layout.tokens.resize(static_cast<size_t>(placement.num_ranks));
  layout.entries.resize(static_cast<size_t>(placement.num_ranks));
  std::vector<int64_t> row_of_rank(static_cast<size_t>(placement.num_ranks));
  std::vector<int32_t> used(static_cast<size_t>(placement.num_ranks));
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::fill(row_of_rank.begin(), row_of_rank.end(), -1);
    std::fill(used.begin(), used.end(), 0);
    for (int32_t j = 0; j < top_k; ++j) {
      const int32_t slot = placement.SlotFor(experts[t * top_k + j], t + source_rank);
      const int32_t rank = slot / placement.slots_per_rank;
      if (row_of_rank[rank] < 0) {
        row_of_rank[rank] = static_cast<int64_t>(layout.tokens[rank].size());
        layout.tokens[rank].push_back(static_cast<int32_t>(t));
        layout.entries[rank].resize(layout.entries[rank].size() + top_k);
      }
      DispatchLayout::Entry& e =
          layout.entries[rank][row_of_rank[rank] * top_k + used[rank]++];
      e.local_slot = slot % placement.slots_per_rank;
      e.weight = weights[t * top_k + j];
    }
  }
  return layout;
}

int64_t ActivationBytes(int64_t hidden, DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return hidden * 2;
    case DType::kF8E4M3:
      return Fp8RowBytes(hidden);
    default:
      return hidden * 4;
  }
}

void EncodeActivations(const float* x, int64_t hidden, DType dtype, uint8_t* out) {
  if (dtype == DType::kBF16) {
    EncodeBf16Row(x, hidden, out);
  } else if (dtype == DType::kF8E4M3) {
    EncodeFp8Row(x, hidden, out);
  } else {
    std::memcpy(out, x, hidden * sizeof(float));
  }
}

void DecodeActivations(const uint8_t* in, int64_t hidden, DType dtype, float* x) {
  if (dtype == DType::kBF16) {
    DecodeBf16Row(in, hidden, x);
  } else if (dtype == DType::kF8E4M3) {
    DecodeFp8Row(in, hidden, x);
  } else {
    std::memcpy(x, in, hidden * sizeof(float));
  }
}

void DecodeAddActivations(const uint8_t* in, int64_t hidden, DType dtype, float* x) {
  if (dtype == DType::kBF16) {
    DecodeAddBf16Row(in, hidden, x);
  } else if (dtype == DType::kF8E4M3) {
    DecodeAddFp8Row(in, hidden, x);
  } else {
    for (int64_t i = 0; i < hidden; ++i) {
      float v;
      std::memcpy(&v, in + 4 * i, 4);
      x[i] += v;
    }
  }
}

namespace {

// body(i) for i in [0, rows), split over the kernel threads when the rows are many (see
// ParallelWorthwhile). Iterations must touch disjoint memory.
template <class Body>
void ForEachRow(int64_t rows, int64_t hidden, const Body& body) {
  if (!ParallelWorthwhile(rows * hidden)) {
    for (int64_t i = 0; i < rows; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) body(i);
}

// ParallelWorthwhile's work units that routing one token counts as: ~2 us, about a product of
// 8K weight elements, so a batch of 8 tokens or more routes on the kernel threads.
constexpr int64_t kRouteWork = 8192;

// Per-thread buffers reused across layers and steps (each rank steps on one thread), so large
// all-to-alls do not map and zero fresh memory every call.
struct Scratch {
  // Dispatch and combine move different sizes: separate buffers keep each at its size.
  std::vector<std::vector<uint8_t>> dispatch_send, combine_send;
  std::vector<std::vector<uint8_t>> dispatch_received, combine_received;
  std::vector<float> received_x;                          // ExpertDispatcher::received_rows()
  std::vector<uint8_t*> encoded_row;                      // [token] its first send row
  std::vector<std::pair<uint8_t*, int32_t>> copied_rows;  // (send row, token) for the others
  // Combine: each token's returned rows, [token_first_row[t], token_first_row[t + 1]).
  std::vector<int64_t> token_first_row, token_fill;
  std::vector<const uint8_t*> token_rows;
};

// The rank whose rows [offsets[r], offsets[r + 1]) hold row `global`.
size_t SourceRank(const std::vector<int64_t>& offsets, int64_t global) {
  return static_cast<size_t>(std::upper_bound(offsets.begin(), offsets.end(), global) -
                             offsets.begin()) - 1;
}

Scratch& ThreadScratch() {
  static thread_local Scratch scratch;
  return scratch;
}

// RunMoe's per-thread buffers, reused the same way: fresh vectors were allocated and zero-filled
// every layer (~0.2 ms a layer at batch 32, where the gathered expert rows are ~0.8 MB).
struct MoeScratch {
  std::vector<float> logits, shared_gate, shared_up, sums, xs, ys;
  std::vector<int32_t> experts;
  std::vector<float> weights;
  // A group's gathered rows (the received row of each xs row) and each received row's expert
  // outputs (ys row, weight) in slot order, [first_output[r], first_output[r + 1]).
  std::vector<int64_t> gather;
  std::vector<int64_t> first_output, fill;
  std::vector<std::pair<int64_t, float>> outputs;
};

MoeScratch& ThreadMoeScratch() {
  static thread_local MoeScratch scratch;
  return scratch;
}

// v's data, v holding at least `size` elements (those it held before keep their values, the
// rest are zero).
template <class T>
T* Sized(std::vector<T>& v, int64_t size) {
  if (v.size() < static_cast<size_t>(size)) v.resize(static_cast<size_t>(size));
  return v.data();
}

}  // namespace

ExpertDispatcher::ExpertDispatcher(Communicator& comm, const MoeTransportOptions& transport,
                                   int64_t hidden, int32_t top_k, int64_t local_slots)
    : comm_(comm), transport_(transport), hidden_(hidden), top_k_(top_k),
      rows_of_slot_(static_cast<size_t>(local_slots)) {
  stats_.bytes_sent_to.assign(static_cast<size_t>(comm.size()), 0);
  stats_.bytes_received_from.assign(static_cast<size_t>(comm.size()), 0);
  stats_.rows_per_local_slot.assign(static_cast<size_t>(local_slots), 0);
}

absl::Status ExpertDispatcher::Dispatch(const float* x, const DispatchLayout& layout,
                                        absl::Time deadline) {
  const int ranks = comm_.size();
  // A row: encoded activations, then top_k local slots (int32, -1 unused), then top_k weights.
  const int64_t act_bytes = ActivationBytes(hidden_, transport_.dispatch);
  const int64_t row_bytes = act_bytes + top_k_ * 8;
  Scratch& scratch = ThreadScratch();
  std::vector<std::vector<uint8_t>>& send = scratch.dispatch_send;
  send.resize(static_cast<size_t>(ranks));
  // Each token is encoded once, straight into its first send row; its rows to other ranks copy
  // that one.
  std::vector<uint8_t*>& encoded_row = scratch.encoded_row;
  std::vector<std::pair<uint8_t*, int32_t>>& copied_rows = scratch.copied_rows;
  encoded_row.assign(static_cast<size_t>(layout.num_tokens), nullptr);
  copied_rows.clear();
  std::vector<absl::Span<const uint8_t>> spans;
  for (int r = 0; r < ranks; ++r) {
    const std::vector<int32_t>& tokens = layout.tokens[r];
    send[r].resize(tokens.size() * row_bytes);
    for (size_t i = 0; i < tokens.size(); ++i) {
      uint8_t* row = send[r].data() + i * row_bytes;
      if (encoded_row[tokens[i]] == nullptr) {
        encoded_row[tokens[i]] = row;
      } else {
        copied_rows.emplace_back(row, tokens[i]);
      }
      for (int32_t j = 0; j < top_k_; ++j) {
        const DispatchLayout::Entry& e = layout.entries[r][i * top_k_ + j];
        std::memcpy(row + act_bytes + 4 * j, &e.local_slot, 4);
        std::memcpy(row + act_bytes + 4 * (top_k_ + j), &e.weight, 4);
      }
    }
    spans.emplace_back(send[r]);
    stats_.bytes_sent_to[r] += static_cast<int64_t>(send[r].size());
  }
  // Encode, then copy to the other ranks' rows: one parallel region, two loops.
  const int64_t copies = static_cast<int64_t>(copied_rows.size());
  auto encode = [&](int64_t t) {
    if (encoded_row[t] != nullptr) {
      EncodeActivations(x + t * hidden_, hidden_, transport_.dispatch, encoded_row[t]);
    }
  };
  auto copy = [&](int64_t c) {
    const auto& [row, token] = copied_rows[c];
    std::memcpy(row, encoded_row[token], static_cast<size_t>(act_bytes));
  };
  if (!ParallelWorthwhile((layout.num_tokens + copies) * hidden_)) {
    for (int64_t t = 0; t < layout.num_tokens; ++t) encode(t);
    for (int64_t c = 0; c < copies; ++c) copy(c);
  } else {
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (int64_t t = 0; t < layout.num_tokens; ++t) encode(t);
#pragma omp for schedule(static)
      for (int64_t c = 0; c < copies; ++c) copy(c);
    }
  }
  std::vector<std::vector<uint8_t>>& received = scratch.dispatch_received;
  const absl::Time start = absl::Now();
  RETURN_IF_ERROR(comm_.AllToAllV(spans, &received, deadline));
  stats_.dispatch_seconds = absl::ToDoubleSeconds(absl::Now() - start);

  row_offset_.assign(received.size() + 1, 0);
  for (size_t r = 0; r < received.size(); ++r) {
    if (received[r].size() % row_bytes != 0) {
      return absl::DataLossError(absl::StrCat("dispatch from rank ", r, ": ", received[r].size(),
                                              " bytes is not a whole number of rows"));
    }
    stats_.bytes_received_from[r] += static_cast<int64_t>(received[r].size());
    row_offset_[r + 1] = row_offset_[r] + static_cast<int64_t>(received[r].size()) / row_bytes;
  }
  const int64_t slots = static_cast<int64_t>(rows_of_slot_.size());
  num_received_ = row_offset_.back();
  scratch.received_x.resize(static_cast<size_t>(num_received_ * hidden_));
  float* received_x = scratch.received_x.data();
  received_x_ = received_x;
  // Every source rank's rows in one loop (one fork and join, not one per rank).
  ForEachRow(num_received_, hidden_, [&](int64_t global) {
    const size_t r = SourceRank(row_offset_, global);
    DecodeActivations(received[r].data() + (global - row_offset_[r]) * row_bytes, hidden_,
                      transport_.dispatch, received_x + global * hidden_);
  });
  for (auto& rows : rows_of_slot_) rows.clear();
  for (size_t r = 0; r < received.size(); ++r) {
    for (int64_t i = 0; i < row_offset_[r + 1] - row_offset_[r]; ++i) {
      const uint8_t* row = received[r].data() + i * row_bytes;
      const int64_t global = row_offset_[r] + i;
      for (int32_t j = 0; j < top_k_; ++j) {
        int32_t slot;
        float weight;
        std::memcpy(&slot, row + act_bytes + 4 * j, 4);
        std::memcpy(&weight, row + act_bytes + 4 * (top_k_ + j), 4);
        if (slot < 0) continue;
        if (slot >= slots) {
          return absl::DataLossError(absl::StrCat("dispatch from rank ", r, ": slot ", slot,
                                                  " of ", slots));
        }
        rows_of_slot_[slot].emplace_back(global, weight);
      }
    }
  }
  for (int64_t s = 0; s < slots; ++s) {
    stats_.rows_per_local_slot[s] = static_cast<int64_t>(rows_of_slot_[s].size());
  }
  return absl::OkStatus();
}

absl::Status ExpertDispatcher::Combine(const float* expert_sums, const DispatchLayout& layout,
                                       absl::Time deadline, float* out) {
  const int ranks = comm_.size();
  const int64_t row_bytes = ActivationBytes(hidden_, transport_.combine);
  Scratch& scratch = ThreadScratch();
  std::vector<std::vector<uint8_t>>& back = scratch.combine_send;
  back.resize(static_cast<size_t>(ranks));
  std::vector<absl::Span<const uint8_t>> spans;
  for (int r = 0; r < ranks; ++r) {
    const int64_t n = row_offset_[r + 1] - row_offset_[r];
    back[r].resize(static_cast<size_t>(n * row_bytes));
    spans.emplace_back(back[r]);
    stats_.bytes_sent_to[r] += static_cast<int64_t>(back[r].size());
  }
  ForEachRow(row_offset_.back(), hidden_, [&](int64_t global) {
    const size_t r = SourceRank(row_offset_, global);
    EncodeActivations(expert_sums + global * hidden_, hidden_, transport_.combine,
                      back[r].data() + (global - row_offset_[r]) * row_bytes);
  });
  std::vector<std::vector<uint8_t>>& combined = scratch.combine_received;
  const absl::Time start = absl::Now();
  RETURN_IF_ERROR(comm_.AllToAllV(spans, &combined, deadline));
  stats_.combine_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  // Each token's rows (at most one per rank), in rank order, so that one loop over tokens adds
  // every rank's contribution in the same order as rank by rank, without two threads on a row.
  std::vector<int64_t>& first = scratch.token_first_row;
  std::vector<const uint8_t*>& rows = scratch.token_rows;
  first.assign(static_cast<size_t>(layout.num_tokens) + 1, 0);
  for (int r = 0; r < ranks; ++r) {
    const std::vector<int32_t>& tokens = layout.tokens[r];
    stats_.bytes_received_from[r] += static_cast<int64_t>(combined[r].size());
    if (combined[r].size() != tokens.size() * row_bytes) {
      return absl::DataLossError(absl::StrCat("combine from rank ", r, ": ", combined[r].size(),
                                              " bytes for ", tokens.size(), " rows"));
    }
    for (int32_t t : tokens) ++first[t + 1];
  }
  for (int64_t t = 0; t < layout.num_tokens; ++t) first[t + 1] += first[t];
  rows.resize(static_cast<size_t>(first.back()));
  std::vector<int64_t>& fill = scratch.token_fill;
  fill.assign(first.begin(), first.end() - 1);
  for (int r = 0; r < ranks; ++r) {
    const std::vector<int32_t>& tokens = layout.tokens[r];
    for (size_t i = 0; i < tokens.size(); ++i) {
      rows[fill[tokens[i]]++] = combined[r].data() + i * row_bytes;
    }
  }
  ForEachRow(layout.num_tokens, hidden_, [&](int64_t t) {
    for (int64_t k = first[t]; k < first[t + 1]; ++k) {
      DecodeAddActivations(rows[k], hidden_, transport_.combine, out + t * hidden_);
    }
  });
  return absl::OkStatus();
}

absl::Status RunMoe(const ModelConfig& c, const LayerWeights& w, const LayerPlacement& placement,
                    const float* h, int64_t num_tokens, Communicator& comm, absl::Time deadline,
                    const MoeTransportOptions& transport, float* out, MoeStats* stats) {
  const int64_t hidden = c.hidden_size;
  const int32_t top_k = static_cast<int32_t>(c.num_experts_per_tok);
  if (placement.num_ranks != comm.size()) {
    return absl::FailedPreconditionError(absl::StrCat("placement is for ", placement.num_ranks,
                                                      " ranks, the group has ", comm.size()));
  }

  MoeScratch& scratch = ThreadMoeScratch();
  // Gate, beside the shared experts' gate and up products, which need no routing: one parallel
  // region for both.
  float* logits = Sized(scratch.logits, num_tokens * c.n_routed_experts);
  const int64_t shared_inter = w.has_shared_experts ? w.shared_experts.gate_proj.rows : 0;
  float* shared_gate = Sized(scratch.shared_gate, num_tokens * shared_inter);
  float* shared_up = Sized(scratch.shared_up, num_tokens * shared_inter);
  {
    std::vector<MatMulJob> first = {{h, num_tokens, &w.gate, logits}};
    if (w.has_shared_experts) {
      first.push_back({h, num_tokens, &w.shared_experts.gate_proj, shared_gate});
      first.push_back({h, num_tokens, &w.shared_experts.up_proj, shared_up});
    }
    MatMulBatch(first);
  }
  SiluMul(shared_gate, shared_up, num_tokens * shared_inter, shared_gate);
  int32_t* experts = Sized(scratch.experts, num_tokens * top_k);
  float* weights = Sized(scratch.weights, num_tokens * top_k);
  const float* bias =
      w.e_score_correction_bias.empty() ? nullptr : w.e_score_correction_bias.data();
  ForEachRow(num_tokens, kRouteWork, [&](int64_t t) {
    RouteToken(c, logits + t * c.n_routed_experts, bias, experts + t * top_k,
               weights + t * top_k);
  });

  // Layout → dispatch.
  const DispatchLayout layout =
      BuildDispatchLayout(experts, weights, num_tokens, top_k, placement, comm.rank());
  ExpertDispatcher dispatcher(comm, transport, hidden, top_k,
                              static_cast<int64_t>(w.experts.size()));
  RETURN_IF_ERROR(dispatcher.Dispatch(h, layout, deadline));

  // Grouped expert compute: each local expert on the rows routed to it, all in one RunMlps with
  // the shared experts' down product beside the experts' gate and up; each received row then
  // collects the weighted sum of its experts' outputs, in slot order. Experts go in groups of at
  // most kGroupRows rows, which bounds the gathered copies on long prefills.
  constexpr int64_t kGroupRows = 4096;
  const int64_t received = dispatcher.num_received();
  float* sums = Sized(scratch.sums, received * hidden);
  std::fill(sums, sums + received * hidden, 0.0f);
  const auto& slot_rows = dispatcher.rows_of_slot();
  std::vector<MlpJob> jobs;
  if (!w.has_shared_experts) std::fill(out, out + num_tokens * hidden, 0.0f);
  size_t first = 0;
  do {  // at least once: the shared experts run in the first group even with no routed rows
    size_t last = first;
    int64_t rows = 0;
    while (last < w.experts.size() &&
           (rows == 0 || rows + static_cast<int64_t>(slot_rows[last].size()) <= kGroupRows)) {
      rows += static_cast<int64_t>(slot_rows[last++].size());
    }
    float* ys = Sized(scratch.ys, rows * hidden);
    std::vector<int64_t>& gather = scratch.gather;
    std::vector<int64_t>& first_output = scratch.first_output;
    gather.clear();
    first_output.assign(static_cast<size_t>(received) + 1, 0);
    jobs.clear();
    // An expert of one row reads it where it was received; the others' rows are gathered into
    // xs, in the order of `gather`. At batch 1 every expert has one row: the six copies of it
    // cost ~2 us a layer (FP8, 2 threads: 3.6-5.3 -> 2.5-3.1 us from routing to the experts).
    for (size_t s = first; s < last; ++s) {
      if (slot_rows[s].size() > 1) {
        for (const auto& [r, weight] : slot_rows[s]) gather.push_back(r);
      }
    }
    float* xs = Sized(scratch.xs, static_cast<int64_t>(gather.size()) * hidden);
    int64_t row = 0, gathered = 0;
    for (size_t s = first; s < last; ++s) {
      const int64_t n = static_cast<int64_t>(slot_rows[s].size());
      for (const auto& [r, weight] : slot_rows[s]) ++first_output[r + 1];
      const float* x = n == 1 ? dispatcher.received_rows() + slot_rows[s][0].first * hidden
                              : xs + gathered * hidden;
      jobs.push_back({&w.experts[s], x, n, ys + row * hidden});
      row += n;
      if (n > 1) gathered += n;
    }
    for (int64_t r = 0; r < received; ++r) first_output[r + 1] += first_output[r];
    std::vector<std::pair<int64_t, float>>& outputs = scratch.outputs;
    outputs.resize(static_cast<size_t>(rows));
    std::vector<int64_t>& fill = scratch.fill;
    fill.assign(first_output.begin(), first_output.end() - 1);
    row = 0;
    for (size_t s = first; s < last; ++s) {
      for (const auto& [r, weight] : slot_rows[s]) outputs[fill[r]++] = {row++, weight};
    }
    ForEachRow(gathered, hidden, [&](int64_t i) {
      std::memcpy(xs + i * hidden, dispatcher.received_rows() + gather[i] * hidden,
                  hidden * sizeof(float));
    });
    const MatMulJob shared_down = {shared_gate, num_tokens, &w.shared_experts.down_proj, out};
    const bool with_shared = first == 0 && w.has_shared_experts;
    RunMlps(jobs, with_shared ? absl::Span<const MatMulJob>(&shared_down, 1)
                              : absl::Span<const MatMulJob>());
    // Rows of different received rows are disjoint: one thread per row's sum.
    ForEachRow(received, hidden * (rows / std::max<int64_t>(received, 1) + 1), [&](int64_t r) {
      for (int64_t k = first_output[r]; k < first_output[r + 1]; ++k) {
        Axpy(outputs[k].second, ys + outputs[k].first * hidden, hidden, sums + r * hidden);
      }
    });
    first = last;
  } while (first < w.experts.size());

  // Combine adds the routed contributions to the shared experts' output.
  RETURN_IF_ERROR(dispatcher.Combine(sums, layout, deadline, out));
  if (stats != nullptr) {
    *stats = std::move(dispatcher.stats());
    stats->tokens_per_logical_expert.assign(static_cast<size_t>(c.n_routed_experts), 0);
    for (int64_t i = 0; i < num_tokens * top_k; ++i) {
      ++stats->tokens_per_logical_expert[experts[i]];
    }
  }
  return absl::OkStatus();
}

}  // namespace epinfer
