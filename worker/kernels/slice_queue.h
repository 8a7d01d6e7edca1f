#ifndef EPINFER_WORKER_KERNELS_SLICE_QUEUE_H_
#define EPINFER_WORKER_KERNELS_SLICE_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <vector>

namespace epinfer {

// Hands out the slices [0, threads × per_thread) of a parallel region's work, where consecutive
// slices are consecutive memory: thread t first takes its own run [t × per_thread, (t + 1) ×
// per_thread) in order, so that its stream runs on from one slice into the next (a fresh stream
// waits on memory latency until the prefetchers catch up), then helps the others from the back
// of their runs, so that a thread slowed down by its neighbours takes less. Every slice is handed
// out exactly once, whatever the number of callers and their thread ids.
class SliceQueue {
 public:
  SliceQueue(int threads, int64_t per_thread)
      : per_thread_(per_thread), runs_(static_cast<size_t>(threads > 0 ? threads : 1)) {
    for (Run& run : runs_) run.state.store(Pack(0, per_thread > 0 ? per_thread : 0));
  }

  // The next slice for thread `me` (any id ≥ 0; ids wrap onto the runs), or -1 when none is left.
  int64_t Next(int me) {
    const int threads = static_cast<int>(runs_.size());
    for (int i = 0; i < threads; ++i) {
      const int t = (me % threads + i) % threads;
      std::atomic<uint64_t>& run = runs_[t].state;
      uint64_t state = run.load();
      while (true) {
        const int64_t front = static_cast<int64_t>(state >> 32);
        const int64_t back = static_cast<int64_t>(state & 0xffffffffu);
        if (front >= back) break;
        const bool own = i == 0;
        const uint64_t next = own ? Pack(front + 1, back) : Pack(front, back - 1);
        if (run.compare_exchange_weak(state, next)) {
          return t * per_thread_ + (own ? front : back - 1);
        }
      }
    }
    return -1;
  }

 private:
  static uint64_t Pack(int64_t front, int64_t back) {
    return (static_cast<uint64_t>(front) << 32) | static_cast<uint64_t>(back);
  }
  // Each run on a cache line of its own: threads take from their own runs at every slice, and
  // runs sharing a line made each take move the line between cores.
  struct alignas(64) Run {
    std::atomic<uint64_t> state;
  };
  int64_t per_thread_;
  std::vector<Run> runs_;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_SLICE_QUEUE_H_
