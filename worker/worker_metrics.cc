#include "worker/worker_metrics.h"

#include "common/metrics.h"

namespace epinfer {
namespace {

prometheus::Histogram::BucketBoundaries TokenBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
}

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& r)
    : registry_(r),
      step_seconds_(prometheus::BuildHistogram()
                        .Name("epinfer_worker_step_duration_seconds")
                        .Help("Duration of EP steps that computed tokens (the whole group's step).")
                        .Register(r)
                        .Add({}, LatencyBucketsSeconds())),
      step_tokens_(prometheus::BuildHistogram()
                       .Name("epinfer_worker_step_tokens")
                       .Help("Tokens this rank computed per non-empty step (decode + prefill).")
                       .Register(r)
                       .Add({}, TokenBuckets())),
      prefill_tokens_(prometheus::BuildCounter()
                          .Name("epinfer_worker_prefill_tokens_total")
                          .Help("Prompt tokens computed (including recomputation after preemption).")
                          .Register(r)
                          .Add({})),
      decode_tokens_(prometheus::BuildCounter()
                         .Name("epinfer_worker_decode_tokens_total")
                         .Help("Decode tokens computed.")
                         .Register(r)
                         .Add({})),
      running_(prometheus::BuildGauge()
                   .Name("epinfer_worker_running_sequences")
                   .Help("Sequences holding KV blocks and being computed.")
                   .Register(r)
                   .Add({})),
      waiting_(prometheus::BuildGauge()
                   .Name("epinfer_worker_waiting_sequences")
                   .Help("Sequences waiting for KV blocks.")
                   .Register(r)
                   .Add({})),
      kv_used_(prometheus::BuildGauge()
                   .Name("epinfer_worker_kv_blocks_used")
                   .Help("KV cache blocks in use.")
                   .Register(r)
                   .Add({})),
      kv_total_(prometheus::BuildGauge()
                    .Name("epinfer_worker_kv_blocks_total")
                    .Help("KV cache blocks in all.")
                    .Register(r)
                    .Add({})),
      epoch_(prometheus::BuildGauge()
                 .Name("epinfer_worker_group_epoch")
                 .Help("Communicator epoch of the EP group this rank runs in.")
                 .Register(r)
                 .Add({})),
      rank_(prometheus::BuildGauge()
                .Name("epinfer_worker_rank")
                .Help("This worker's EP rank.")
                .Register(r)
                .Add({})),
      world_size_(prometheus::BuildGauge()
                      .Name("epinfer_worker_group_size")
                      .Help("Ranks in the EP group.")
                      .Register(r)
                      .Add({})),
      placement_version_(prometheus::BuildGauge()
                             .Name("epinfer_worker_placement_version")
                             .Help("Version of the expert placement this rank runs.")
                             .Register(r)
                             .Add({})),
      group_failures_(prometheus::BuildCounter()
                          .Name("epinfer_worker_group_failures_total")
                          .Help("Steps that failed because a collective failed (peer died, "
                                "deadline), each followed by re-forming the group.")
                          .Register(r)
                          .Add({})),
      budget_(prometheus::BuildGauge()
                  .Name("epinfer_worker_step_token_budget")
                  .Help("Tokens this rank may compute per step (set by the scheduler's batch "
                        "scaling, else the worker's --max_tokens_per_step).")
                  .Register(r)
                  .Add({})),
      finished_(prometheus::BuildCounter()
                    .Name("epinfer_worker_sequences_finished_total")
                    .Help("Sequences ended, by reason: length, eos, stop, cancelled, error.")
                    .Register(r)),
      dispatch_seconds_(prometheus::BuildHistogram()
                            .Name("epinfer_moe_dispatch_seconds")
                            .Help("Latency of one MoE layer's dispatch all-to-all.")
                            .Register(r)
                            .Add({}, LatencyBucketsSeconds())),
      combine_seconds_(prometheus::BuildHistogram()
                           .Name("epinfer_moe_combine_seconds")
                           .Help("Latency of one MoE layer's combine all-to-all.")
                           .Register(r)
                           .Add({}, LatencyBucketsSeconds())),
      bytes_sent_(prometheus::BuildCounter()
                      .Name("epinfer_moe_sent_bytes_total")
                      .Help("Bytes this rank sent to each peer in MoE dispatch and combine.")
                      .Register(r)),
      bytes_received_(prometheus::BuildCounter()
                          .Name("epinfer_moe_received_bytes_total")
                          .Help("Bytes this rank received from each peer in MoE dispatch and "
                                "combine.")
                          .Register(r)),
      slot_tokens_(prometheus::BuildCounter()
                       .Name("epinfer_moe_slot_tokens_total")
                       .Help("Tokens received by each local expert slot, per MoE layer.")
                       .Register(r)) {}

void WorkerMetrics::RecordStep(const StepReport& step) {
  if (step.global_tokens == 0) return;
  step_seconds_.Observe(absl::ToDoubleSeconds(step.duration));
  if (step.local_tokens > 0) step_tokens_.Observe(static_cast<double>(step.local_tokens));
  prefill_tokens_.Increment(static_cast<double>(step.prefill_tokens));
  decode_tokens_.Increment(static_cast<double>(step.decode_tokens));
  absl::MutexLock lock(&mu_);
  for (size_t layer = 0; layer < step.forward.moe.size(); ++layer) {
    const MoeStats& moe = step.forward.moe[layer];
    if (moe.bytes_sent_to.empty()) continue;
    dispatch_seconds_.Observe(moe.dispatch_seconds);
    combine_seconds_.Observe(moe.combine_seconds);
    for (size_t peer = 0; peer < moe.bytes_sent_to.size(); ++peer) {
      const std::string p = std::to_string(peer);
      bytes_sent_.Add({{"peer", p}}).Increment(static_cast<double>(moe.bytes_sent_to[peer]));
      bytes_received_.Add({{"peer", p}})
          .Increment(static_cast<double>(moe.bytes_received_from[peer]));
    }
    for (size_t slot = 0; slot < moe.rows_per_local_slot.size(); ++slot) {
      if (moe.rows_per_local_slot[slot] == 0) continue;
      slot_tokens_.Add({{"layer", std::to_string(layer)}, {"slot", std::to_string(slot)}})
          .Increment(static_cast<double>(moe.rows_per_local_slot[slot]));
    }
  }
}

void WorkerMetrics::RecordFinish(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  finished_.Add({{"reason", reason}}).Increment();
}

void WorkerMetrics::SetEngine(const EngineStats& stats) {
  running_.Set(static_cast<double>(stats.running));
  waiting_.Set(static_cast<double>(stats.waiting));
  kv_used_.Set(static_cast<double>(stats.kv_blocks_total - stats.kv_blocks_free));
  kv_total_.Set(static_cast<double>(stats.kv_blocks_total));
}

void WorkerMetrics::SetGroup(uint64_t epoch, int rank, int world_size, uint64_t placement_version) {
  epoch_.Set(static_cast<double>(epoch));
  rank_.Set(rank);
  world_size_.Set(world_size);
  placement_version_.Set(static_cast<double>(placement_version));
}

}  // namespace epinfer
