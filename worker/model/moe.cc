#include "worker/model/moe.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/kernels/linear.h"
#include "worker/kernels/ops.h"
#include "worker/model/gate.h"

namespace epinfer {

void RunMlp(const MlpWeights& w, const float* x, int64_t n, float* y) {
  if (n == 0) return;
  const int64_t inter = w.gate_proj.rows;
  std::vector<float> gate(static_cast<size_t>(n * inter)), up(gate.size());
  MatMul(x, n, w.gate_proj, gate.data());
  MatMul(x, n, w.up_proj, up.data());
  SiluMul(gate.data(), up.data(), n * inter, gate.data());
  MatMul(gate.data(), n, w.down_proj, y);
}

DispatchLayout BuildDispatchLayout(const int32_t* experts, const float* weights,
                                   int64_t num_tokens, int32_t top_k,
                                   const LayerPlacement& placement) {
  DispatchLayout layout;
  layout.num_ranks = placement.num_ranks;
  layout.top_k = top_k;
  layout.tokens.resize(static_cast<size_t>(placement.num_ranks));
  layout.entries.resize(static_cast<size_t>(placement.num_ranks));
  std::vector<int64_t> row_of_rank(static_cast<size_t>(placement.num_ranks));
  std::vector<int32_t> used(static_cast<size_t>(placement.num_ranks));
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::fill(row_of_rank.begin(), row_of_rank.end(), -1);
    std::fill(used.begin(), used.end(), 0);
    for (int32_t j = 0; j < top_k; ++j) {
      const int32_t slot = placement.SlotFor(experts[t * top_k + j], t);
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

namespace {

// A dispatched row on the wire: hidden f32 activations, then top_k (local slot, weight) pairs.
int64_t RowBytes(int64_t hidden, int32_t top_k) {
  return hidden * static_cast<int64_t>(sizeof(float)) + top_k * 8;
}

}  // namespace

absl::Status RunMoe(const ModelConfig& c, const LayerWeights& w, const LayerPlacement& placement,
                    const float* h, int64_t num_tokens, Communicator& comm, absl::Time deadline,
                    float* out, MoeStats* stats) {
  const int64_t hidden = c.hidden_size;
  const int32_t top_k = static_cast<int32_t>(c.num_experts_per_tok);
  if (placement.num_ranks != comm.size()) {
    return absl::FailedPreconditionError(absl::StrCat("placement is for ", placement.num_ranks,
                                                      " ranks, the group has ", comm.size()));
  }

  // Gate.
  std::vector<float> logits(static_cast<size_t>(num_tokens * c.n_routed_experts));
  MatMul(h, num_tokens, w.gate, logits.data());
  std::vector<int32_t> experts(static_cast<size_t>(num_tokens * top_k));
  std::vector<float> weights(experts.size());
  const float* bias = w.e_score_correction_bias.empty() ? nullptr : w.e_score_correction_bias.data();
  for (int64_t t = 0; t < num_tokens; ++t) {
    RouteToken(c, logits.data() + t * c.n_routed_experts, bias, experts.data() + t * top_k,
               weights.data() + t * top_k);
  }
  if (stats != nullptr) {
    stats->tokens_per_logical_expert.assign(static_cast<size_t>(c.n_routed_experts), 0);
    for (int32_t e : experts) ++stats->tokens_per_logical_expert[e];
  }

  // Layout and dispatch.
  const DispatchLayout layout =
      BuildDispatchLayout(experts.data(), weights.data(), num_tokens, top_k, placement);
  const int64_t row_bytes = RowBytes(hidden, top_k);
  std::vector<std::vector<uint8_t>> send(static_cast<size_t>(comm.size()));
  std::vector<absl::Span<const uint8_t>> send_spans;
  for (int32_t r = 0; r < comm.size(); ++r) {
    const std::vector<int32_t>& tokens = layout.tokens[r];
    send[r].resize(tokens.size() * row_bytes);
    for (size_t i = 0; i < tokens.size(); ++i) {
      uint8_t* row = send[r].data() + i * row_bytes;
      std::memcpy(row, h + tokens[i] * hidden, hidden * sizeof(float));
      int32_t* slots = reinterpret_cast<int32_t*>(row + hidden * sizeof(float));
      float* ws = reinterpret_cast<float*>(slots + top_k);
      for (int32_t j = 0; j < top_k; ++j) {
        slots[j] = layout.entries[r][i * top_k + j].local_slot;
        ws[j] = layout.entries[r][i * top_k + j].weight;
      }
    }
    send_spans.emplace_back(send[r]);
  }
  std::vector<std::vector<uint8_t>> received;
  absl::Time start = absl::Now();
  RETURN_IF_ERROR(comm.AllToAllV(send_spans, &received, deadline));
  if (stats != nullptr) stats->dispatch_seconds = absl::ToDoubleSeconds(absl::Now() - start);

  // Grouped expert compute: gather the rows of each local slot, run the expert, add the
  // weighted output into the row's result.
  const int64_t slots = static_cast<int64_t>(w.experts.size());
  std::vector<int64_t> row_offset(received.size() + 1, 0);
  for (size_t r = 0; r < received.size(); ++r) {
    if (received[r].size() % row_bytes != 0) {
      return absl::DataLossError(absl::StrCat("dispatch from rank ", r, ": ", received[r].size(),
                                              " bytes is not a whole number of rows"));
    }
    row_offset[r + 1] = row_offset[r] + static_cast<int64_t>(received[r].size()) / row_bytes;
  }
  const int64_t rows = row_offset.back();
  std::vector<std::vector<std::pair<int64_t, float>>> per_slot(static_cast<size_t>(slots));
  std::vector<const float*> row_x(static_cast<size_t>(rows));
  for (size_t r = 0; r < received.size(); ++r) {
    for (int64_t i = 0; i < row_offset[r + 1] - row_offset[r]; ++i) {
      const uint8_t* row = received[r].data() + i * row_bytes;
      const int64_t global = row_offset[r] + i;
      row_x[global] = reinterpret_cast<const float*>(row);
      const int32_t* slot_ids = reinterpret_cast<const int32_t*>(row + hidden * sizeof(float));
      const float* ws = reinterpret_cast<const float*>(slot_ids + top_k);
      for (int32_t j = 0; j < top_k; ++j) {
        if (slot_ids[j] < 0) continue;
        if (slot_ids[j] >= slots) {
          return absl::DataLossError(absl::StrCat("dispatch from rank ", r, ": slot ",
                                                  slot_ids[j], " of ", slots));
        }
        per_slot[slot_ids[j]].emplace_back(global, ws[j]);
      }
    }
  }
  std::vector<float> expert_out(static_cast<size_t>(rows * hidden), 0.0f);
  if (stats != nullptr) stats->rows_per_local_slot.assign(static_cast<size_t>(slots), 0);
  std::vector<float> xs, ys;
  for (int64_t s = 0; s < slots; ++s) {
    const auto& assigned = per_slot[s];
    if (assigned.empty()) continue;
    const int64_t n = static_cast<int64_t>(assigned.size());
    if (stats != nullptr) stats->rows_per_local_slot[s] = n;
    xs.resize(static_cast<size_t>(n * hidden));
    ys.resize(xs.size());
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(xs.data() + i * hidden, row_x[assigned[i].first], hidden * sizeof(float));
    }
    RunMlp(w.experts[s], xs.data(), n, ys.data());
    for (int64_t i = 0; i < n; ++i) {
      Axpy(assigned[i].second, ys.data() + i * hidden, hidden,
           expert_out.data() + assigned[i].first * hidden);
    }
  }

  // Combine: each row's weighted sum goes back to the rank it came from, in the same order.
  std::vector<absl::Span<const uint8_t>> back;
  for (size_t r = 0; r < received.size(); ++r) {
    back.emplace_back(reinterpret_cast<const uint8_t*>(expert_out.data() + row_offset[r] * hidden),
                      (row_offset[r + 1] - row_offset[r]) * hidden * sizeof(float));
  }
  std::vector<std::vector<uint8_t>> combined;
  start = absl::Now();
  RETURN_IF_ERROR(comm.AllToAllV(back, &combined, deadline));
  if (stats != nullptr) {
    stats->combine_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    stats->bytes_sent = 0;
    stats->bytes_received = 0;
    for (const auto& s : send) stats->bytes_sent += static_cast<int64_t>(s.size());
    for (const auto& b : back) stats->bytes_sent += static_cast<int64_t>(b.size());
    for (const auto& r : received) stats->bytes_received += static_cast<int64_t>(r.size());
    for (const auto& r : combined) stats->bytes_received += static_cast<int64_t>(r.size());
  }

  // Shared experts, then the routed contributions in rank order.
  if (w.has_shared_experts) {
    RunMlp(w.shared_experts, h, num_tokens, out);
  } else {
    std::fill(out, out + num_tokens * hidden, 0.0f);
  }
  for (int32_t r = 0; r < comm.size(); ++r) {
    const std::vector<int32_t>& tokens = layout.tokens[r];
    if (combined[r].size() != tokens.size() * hidden * sizeof(float)) {
      return absl::DataLossError(absl::StrCat("combine from rank ", r, ": ", combined[r].size(),
                                              " bytes for ", tokens.size(), " rows"));
    }
    const float* rows_back = reinterpret_cast<const float*>(combined[r].data());
    for (size_t i = 0; i < tokens.size(); ++i) {
      Axpy(1.0f, rows_back + i * hidden, hidden, out + tokens[i] * hidden);
    }
  }
  return absl::OkStatus();
}

}  // namespace epinfer
