#include "worker/kernels/weight_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace epinfer {

WeightArena::WeightArena(WeightArena&& other) noexcept
    : mappings_(std::move(other.mappings_)),
      next_(std::exchange(other.next_, nullptr)),
      left_(std::exchange(other.left_, 0)),
      allocated_(std::exchange(other.allocated_, 0)) {
  other.mappings_.clear();
}

WeightArena& WeightArena::operator=(WeightArena&& other) noexcept {
  if (this != &other) {
    Release();
    mappings_ = std::move(other.mappings_);
    other.mappings_.clear();
    next_ = std::exchange(other.next_, nullptr);
    left_ = std::exchange(other.left_, 0);
    allocated_ = std::exchange(other.allocated_, 0);
  }
  return *this;
}

WeightArena::~WeightArena() { Release(); }

void WeightArena::Release() {
  for (const Mapping& m : mappings_) ::munmap(m.base, m.size);
  mappings_.clear();
  next_ = nullptr;
  left_ = 0;
}

uint8_t* WeightArena::Allocate(size_t bytes) {
  constexpr size_t kAlign = 64;
  // No mapping holds more than half the address space; beyond, the rounding below would wrap.
  if (bytes > std::numeric_limits<size_t>::max() / 2) return nullptr;
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;
  if (bytes > left_) {
    // A new chunk, its start on a huge-page boundary: map one huge page more than needed and
    // align inside it (the unused head and tail stay untouched, so they never become resident).
    const size_t chunk = std::max(kChunkBytes, (bytes + kHugePage - 1) / kHugePage * kHugePage);
    const size_t size = chunk + kHugePage;
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return nullptr;
    mappings_.push_back({base, size});
    const uintptr_t start =
        (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) / kHugePage * kHugePage;
    ::madvise(reinterpret_cast<void*>(start), chunk, MADV_HUGEPAGE);  // advice: may be refused
    next_ = reinterpret_cast<uint8_t*>(start);
    left_ = chunk;
  }
  uint8_t* out = next_;
  next_ += bytes;
  left_ -= bytes;
  allocated_ += bytes;
  return out;
}

}  // namespace epinfer
