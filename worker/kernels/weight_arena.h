#ifndef EPINFER_WORKER_KERNELS_WEIGHT_ARENA_H_
#define EPINFER_WORKER_KERNELS_WEIGHT_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace epinfer {

// Memory for weights that live as long as the model and are streamed every decode step (the
// panel-packed copies): anonymous mappings advised for transparent huge pages, so that a step's
// stream through ~100 MB walks 2 MiB pages instead of 4 KiB ones. On this project's 2-core VM the
// 4 KiB pages cost a BF16 decode step ~10% (TLB misses and page walks the prefetchers stop at).
// Where the kernel refuses the advice (THP disabled) the memory is ordinary pages, same contents.
// Allocations are bump-allocated from chunks of at least kChunkBytes and freed with the arena.
class WeightArena {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;
  static constexpr size_t kChunkBytes = size_t{64} << 20;

  WeightArena() = default;
  WeightArena(WeightArena&& other) noexcept;
  WeightArena& operator=(WeightArena&& other) noexcept;
  WeightArena(const WeightArena&) = delete;
  WeightArena& operator=(const WeightArena&) = delete;
  ~WeightArena();

  // `bytes` zeroed bytes, 64-byte aligned, valid until the arena goes; nullptr when the system
  // has no memory left to map.
  uint8_t* Allocate(size_t bytes);

  // Bytes handed out so far.
  size_t allocated() const { return allocated_; }

 private:
  struct Mapping {
    void* base = nullptr;
    size_t size = 0;
  };
  void Release();

  std::vector<Mapping> mappings_;
  uint8_t* next_ = nullptr;  // free space of the newest chunk
  size_t left_ = 0;
  size_t allocated_ = 0;
};

}  // namespace epinfer

#endif  // EPINFER_WORKER_KERNELS_WEIGHT_ARENA_H_
