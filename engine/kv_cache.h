#ifndef MOESERVE_ENGINE_KV_CACHE_H_
#define MOESERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config.h"

namespace moeserve::engine {

// A paged cache of MLA's compressed latent: for every token and layer, the normalised
// kv_lora_rank latent followed by the rotated qk_rope_head_dim key (latent_dim() floats). Never
// the expanded K/V. One pool of fixed-size blocks; a sequence owns a table of block ids. Blocks
// are reference-counted so forks share their common prefix.
//
// Storage is float32 (exact in f32 compute; in bf16 compute the latent is small next to the
// weights, see DESIGN.md). Not thread-safe: owned by the engine thread.
class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t block_tokens, int64_t num_blocks);

  // Blocks that fit in `bytes` for this config and block size (at least 1).
  static int64_t BlocksForBytes(const ModelConfig& config, int64_t block_tokens, int64_t bytes);
  static int64_t BytesPerToken(const ModelConfig& config);

  int64_t block_tokens() const { return block_tokens_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t latent_dim() const { return latent_dim_; }
  int64_t bytes() const { return num_blocks_ * num_layers_ * block_tokens_ * latent_dim_ * 4; }

  // Takes a free block (refcount 1). ResourceExhausted when none is free.
  absl::StatusOr<int32_t> Allocate();
  // Adds a reference (a fork sharing the block).
  void Retain(int32_t block);
  // Drops a reference; the block is free again at zero.
  void Release(int32_t block);
  int32_t RefCount(int32_t block) const { return refs_[block]; }

  // The latent row of (block, layer, slot).
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
  // Not zero-filled: pages become resident only as blocks are used.
  std::unique_ptr<float[]> data_;
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_KV_CACHE_H_
