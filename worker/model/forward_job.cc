#include "worker/model/forward_job.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace epinfer {

absl::StatusOr<std::vector<float>> RunForwardJob(const ForwardJob& job, Communicator& comm) {
  const int rank = comm.rank(), size = comm.size();
  ASSIGN_OR_RETURN(ModelConfig config,
                   LoadModelConfig((std::filesystem::path(job.model_dir) / "config.json").string()));
  std::vector<bool> moe(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) moe[l] = config.is_moe_layer(l);
  LoadOptions load;
  load.rank = rank;
  if (!job.placement_json.empty()) {
    ASSIGN_OR_RETURN(load.placement,
                     ExpertPlacement::FromJson(job.placement_json, moe,
                                               static_cast<int32_t>(config.n_routed_experts)));
    if (load.placement.layers[config.first_k_dense_replace].num_ranks != size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "placement is for ", load.placement.layers[config.first_k_dense_replace].num_ranks,
          " ranks, the group has ", size));
    }
  } else {
    ASSIGN_OR_RETURN(load.placement,
                     ExpertPlacement::Contiguous(config.num_hidden_layers, moe,
                                                 static_cast<int32_t>(config.n_routed_experts), size));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<DeepseekV3Model> model,
                   DeepseekV3Model::Load(job.model_dir, load));
  ASSIGN_OR_RETURN(KvCache cache, model->MakeKvCache(job.kv_cache_bytes));

  // This rank's sequences (DP attention) and their KV.
  std::vector<size_t> mine;
  for (size_t s = 0; s < job.sequences.size(); ++s) {
    if (static_cast<int>(s % size) == rank) mine.push_back(s);
  }
  std::vector<KvBlockTable> kv(mine.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    RETURN_IF_ERROR(cache.Reserve(kv[i], static_cast<int64_t>(job.sequences[mine[i]].size())));
  }
  std::vector<std::vector<float>> logits(mine.size());
  const int64_t vocab = config.vocab_size;
  std::vector<float> step_logits;
  if (!job.decode) {
    std::vector<SequenceStep> batch;
    for (size_t i = 0; i < mine.size(); ++i) {
      batch.push_back({job.sequences[mine[i]], 0, &kv[i], true});
    }
    RETURN_IF_ERROR(model->Forward(batch, cache, comm, job.options, &step_logits));
    size_t offset = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      const size_t n = job.sequences[mine[i]].size() * vocab;
      logits[i].assign(step_logits.begin() + offset, step_logits.begin() + offset + n);
      offset += n;
    }
  } else {
    // Every rank runs as many steps as the longest sequence of the whole job.
    size_t steps = 0;
    for (const auto& s : job.sequences) steps = std::max(steps, s.size());
    for (size_t t = 0; t < steps; ++t) {
      std::vector<SequenceStep> batch;
      std::vector<size_t> in_batch;
      for (size_t i = 0; i < mine.size(); ++i) {
        const std::vector<int32_t>& tokens = job.sequences[mine[i]];
        if (t >= tokens.size()) continue;
        batch.push_back({absl::Span<const int32_t>(&tokens[t], 1), static_cast<int64_t>(t),
                         &kv[i], true});
        in_batch.push_back(i);
      }
      RETURN_IF_ERROR(model->Forward(batch, cache, comm, job.options, &step_logits));
      for (size_t b = 0; b < in_batch.size(); ++b) {
        logits[in_batch[b]].insert(logits[in_batch[b]].end(), step_logits.begin() + b * vocab,
                                   step_logits.begin() + (b + 1) * vocab);
      }
    }
  }

  // Gather at rank 0: each rank sends its sequences' logits, in sequence order.
  std::vector<float> own;
  for (const auto& l : logits) own.insert(own.end(), l.begin(), l.end());
  std::vector<absl::Span<const uint8_t>> send(static_cast<size_t>(size));
  send[0] = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(own.data()),
                                      own.size() * sizeof(float));
  std::vector<std::vector<uint8_t>> received;
  RETURN_IF_ERROR(comm.AllToAllV(send, &received, absl::Now() + job.options.collective_timeout));
  if (rank != 0) return std::vector<float>();
  std::vector<size_t> offsets(static_cast<size_t>(size), 0);
  std::vector<float> all;
  for (size_t s = 0; s < job.sequences.size(); ++s) {
    const int from = static_cast<int>(s % size);
    const size_t bytes = job.sequences[s].size() * vocab * sizeof(float);
    if (offsets[from] + bytes > received[from].size()) {
      return absl::DataLossError(absl::StrCat("rank ", from, " sent too few logits"));
    }
    const float* p = reinterpret_cast<const float*>(received[from].data() + offsets[from]);
    all.insert(all.end(), p, p + bytes / sizeof(float));
    offsets[from] += bytes;
  }
  return all;
}

}  // namespace epinfer
