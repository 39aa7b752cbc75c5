#ifndef MOESERVE_ENGINE_CUDA_LATENT_ATTENTION_CUH_
#define MOESERVE_ENGINE_CUDA_LATENT_ATTENTION_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace moeserve::engine::cuda {

inline constexpr int kAttentionMaxKvr = 1024;

// Paged MLA attention in the absorbed form over the KvCache layout (engine/backend.h,
// LatentAttentionArgs): one block per query item, eight warps each keeping an online softmax
// (running max, sum and kvr-float accumulator) over every eighth key, merged at the end.
// kvr <= kAttentionMaxKvr. An item whose length is below 1 gets zeros; a length past its block
// table (max_blocks * block_tokens) is cut there (the CPU backend rejects both; the device cannot
// report them without a synchronisation).
struct LatentAttentionArgs {
  const float* q = nullptr;
  int64_t ldq = 0;
  int64_t items = 0;
  const int32_t* table_rows = nullptr;
  const int32_t* lens = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t max_blocks = 0;
  const float* cache = nullptr;
  int64_t num_layers = 0;
  int64_t layer = 0;
  int64_t block_tokens = 0;
  int64_t lat = 0;
  int64_t kvr = 0;
  float scale = 1.0f;
  float* out = nullptr;
  int64_t ld_out = 0;
};
cudaError_t LaunchLatentAttention(const LatentAttentionArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_LATENT_ATTENTION_CUH_
