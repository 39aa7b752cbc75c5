#ifndef MOESERVE_ENGINE_CUDA_LATENT_ATTENTION_CUH_
#define MOESERVE_ENGINE_CUDA_LATENT_ATTENTION_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moeserve::engine::cuda {

inline constexpr int kAttentionMaxKvr = 1024;
inline constexpr int kAttentionMaxLat = 1536;

// Paged MLA attention in the absorbed form over the KvCache layout (engine/backend.h,
// LatentAttentionArgs). The items of one group (the heads of one query token) share their
// table row and length, so one block takes up to 16 heads of a group (8 when there are fewer
// tokens than multiprocessors) and streams each cached row of its key range through shared
// memory once for all of them: 32-row tiles, the scores of every head against the tile, an
// online softmax per head and a kvr-float accumulator per head. Where the blocks would not fill
// the device (decode over long contexts) the key range is split across blocks whose partial
// (max, sum, accumulator) a second kernel merges; that needs LatentAttentionWorkspaceBytes() of
// device scratch. kvr <= kAttentionMaxKvr, lat <=
// kAttentionMaxLat. An item whose length is below 1 gets zeros; a length past its block table
// (max_blocks * block_tokens) is cut there (the CPU backend rejects both; the device cannot
// report them without a synchronisation). A bfloat16 cache is widened to float32 as its rows
// enter shared memory; everything after is the float32 path.
struct LatentAttentionArgs {
  const float* q = nullptr;
  int64_t ldq = 0;
  int64_t items = 0;
  int64_t group = 1;  // items % group == 0; items [g * group, (g + 1) * group) share a row
  const int32_t* table_rows = nullptr;
  const int32_t* lens = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t max_blocks = 0;
  const void* cache = nullptr;  // float32 elements, or bfloat16 ones when cache_bf16
  bool cache_bf16 = false;
  int64_t num_layers = 0;
  int64_t layer = 0;
  int64_t block_tokens = 0;
  int64_t lat = 0;
  int64_t kvr = 0;
  float scale = 1.0f;
  float* out = nullptr;
  int64_t ld_out = 0;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};
// Scratch the launch needs on the current device (0 when it does not split). Enqueues nothing.
cudaError_t LatentAttentionWorkspaceBytes(const LatentAttentionArgs& args, size_t* bytes);
cudaError_t LaunchLatentAttention(const LatentAttentionArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_LATENT_ATTENTION_CUH_
