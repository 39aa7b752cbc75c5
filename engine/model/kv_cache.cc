#include "engine/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace moeserve::engine {

KvCache::KvCache(const ModelConfig& config, int64_t block_tokens, int64_t num_blocks,
                 DType dtype, bool host_storage)
    : num_layers_(config.num_hidden_layers),
      latent_dim_(config.latent_dim()),
      block_tokens_(std::max<int64_t>(1, block_tokens)),
      num_blocks_(std::max<int64_t>(1, num_blocks)),
      dtype_(dtype),
      refs_(num_blocks_, 0) {
  if (host_storage && dtype == DType::kF32) {
    data_.reset(new float[static_cast<size_t>(num_blocks_ * num_layers_ * block_tokens_ *
                                              latent_dim_)]);
  }
  free_.reserve(num_blocks_);
  // Hand out low block ids first (pop from the back).
  for (int64_t b = num_blocks_ - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t KvCache::BytesPerToken(const ModelConfig& config, DType dtype) {
  return config.num_hidden_layers * config.latent_dim() * DTypeSize(dtype);
}

int64_t KvCache::BlocksForBytes(const ModelConfig& config, int64_t block_tokens, int64_t bytes,
                                DType dtype) {
  int64_t per_block = BytesPerToken(config, dtype) * std::max<int64_t>(1, block_tokens);
  return std::max<int64_t>(1, bytes / per_block);
}

absl::StatusOr<int32_t> KvCache::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: all ", num_blocks_, " blocks of ", block_tokens_,
                     " tokens are in use"));
  }
  int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

void KvCache::Retain(int32_t block) {
  MOESERVE_CHECK(refs_[block] > 0) << "retain of free block " << block;
  ++refs_[block];
}

void KvCache::Release(int32_t block) {
  MOESERVE_CHECK(refs_[block] > 0) << "release of free block " << block;
  if (--refs_[block] == 0) free_.push_back(block);
}

void KvCache::CopyBlock(int32_t src, int32_t dst, int64_t tokens) {
  for (int64_t l = 0; l < num_layers_; ++l) {
    std::memcpy(Row(dst, l, 0), Row(src, l, 0), sizeof(float) * tokens * latent_dim_);
  }
}

}  // namespace moeserve::engine
