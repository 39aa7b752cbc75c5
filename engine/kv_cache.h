#ifndef MOESERVE_ENGINE_KV_CACHE_H_
#define MOESERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/dtype.h"

namespace moeserve::engine {

// A paged cache of MLA's compressed latent: for every token and layer, the normalised
// kv_lora_rank latent followed by the rotated qk_rope_head_dim key (latent_dim() elements).
// Never the expanded K/V. One pool of fixed-size blocks; a sequence owns a table of block ids.
// Blocks are reference-counted so forks share their common prefix.
//
// Elements are float32 (exact in f32 compute) or bfloat16 (half the bytes; a StepRunner on a
// backend rounds each latent as it is written, see DESIGN-NOTES.md). Only a float32 cache with
// host storage has rows here (the host runner's); a backend runner keeps the bytes in its own
// memory and uses this object for the block accounting and the geometry. Not thread-safe:
// owned by the engine thread.
class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t block_tokens, int64_t num_blocks,
          DType dtype = DType::kF32, bool host_storage = true);

  // Blocks that fit in `bytes` for this config, block size and element type (at least 1).
  static int64_t BlocksForBytes(const ModelConfig& config, int64_t block_tokens, int64_t bytes,
                                DType dtype = DType::kF32);
  static int64_t BytesPerToken(const ModelConfig& config, DType dtype = DType::kF32);

  int64_t block_tokens() const { return block_tokens_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t latent_dim() const { return latent_dim_; }
  DType dtype() const { return dtype_; }
  // A block's bytes: every layer's block_tokens rows (StepRunner's block format).
  int64_t block_bytes() const {
    return num_layers_ * block_tokens_ * latent_dim_ * DTypeSize(dtype_);
  }
  int64_t bytes() const { return num_blocks_ * block_bytes(); }
  // Whether Row() has storage behind it (a float32 cache made with host_storage).
  bool has_rows() const { return data_ != nullptr; }

  // Takes a free block (refcount 1). ResourceExhausted when none is free.
  absl::StatusOr<int32_t> Allocate();
  // Adds a reference (a fork sharing the block).
  void Retain(int32_t block);
  // Drops a reference; the block is free again at zero.
  void Release(int32_t block);
  int32_t RefCount(int32_t block) const { return refs_[block]; }

  // The latent row of (block, layer, slot); has_rows() must hold.
  float* Row(int32_t block, int64_t layer, int64_t slot) {
    return data_.get() + ((static_cast<int64_t>(block) * num_layers_ + layer) * block_tokens_ +
                           slot) * latent_dim_;
  }
  const float* Row(int32_t block, int64_t layer, int64_t slot) const {
    return const_cast<KvCache*>(this)->Row(block, layer, slot);
  }
  // Copies every layer of `src` block's first `tokens` slots into `dst`.
  void CopyBlock(int32_t src, int32_t dst, int64_t tokens);

 private:
  int64_t num_layers_;
  int64_t latent_dim_;
  int64_t block_tokens_;
  int64_t num_blocks_;
  DType dtype_;
  // Not zero-filled: pages become resident only as blocks are used.
  std::unique_ptr<float[]> data_;
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_KV_CACHE_H_
