#ifndef MOESERVE_ENGINE_MODEL_SCRATCH_H_
#define MOESERVE_ENGINE_MODEL_SCRATCH_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace moeserve::engine {

// Uninitialised temporaries for one forward step, reused from step to step. A prefill step's
// temporaries are tens of MiB; as fresh std::vectors they were new pages every step, and the
// page faults plus zero-filling cost more than the step's arithmetic (most of a 512-token
// prefill on the `small` preset).
//
// Alloc hands out 64-byte-aligned pieces of one block, valid until the next Reset. When a step
// needs more than the block, further pieces come from extra blocks and the next Reset replaces
// them all with one block of the total, so a steady workload allocates nothing.
class ScratchArena {
 public:
  // Starts a step: every piece handed out before is released.
  void Reset() {
    if (!extra_.empty()) {
      capacity_ = std::max(capacity_, used_total_);
      extra_.clear();
      block_.reset(new std::byte[capacity_ + 64]);
    }
    used_ = 0;
    used_total_ = 0;
  }

  template <typename T>
  T* Alloc(int64_t n) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T) + 63) / 64 * 64;
    used_total_ += bytes;
    if (block_ != nullptr && used_ + bytes <= capacity_) {
      std::byte* p = Aligned(block_.get()) + used_;
      used_ += bytes;
      return reinterpret_cast<T*>(p);
    }
    extra_.emplace_back(new std::byte[bytes + 64]);
    return reinterpret_cast<T*>(Aligned(extra_.back().get()));
  }

 private:
  static std::byte* Aligned(std::byte* p) {
    return p + (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64;
  }

  std::unique_ptr<std::byte[]> block_;  // capacity_ + 64 bytes (room to align)
  size_t capacity_ = 0;
  size_t used_ = 0;
  size_t used_total_ = 0;  // every Alloc this step, block or extra
  std::vector<std::unique_ptr<std::byte[]>> extra_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_MODEL_SCRATCH_H_
