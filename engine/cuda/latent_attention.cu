#include <cmath>

#include "engine/cuda/device_util.cuh"
#include "engine/cuda/latent_attention.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kPerLane = kAttentionMaxKvr / 32;

// Dynamic shared memory: q [lat], per-warp max and sum [2 * kWarps], per-warp accumulators
// [kWarps * kvr].
__global__ void __launch_bounds__(kWarps * 32) LatentAttentionKernel(LatentAttentionArgs a) {
  extern __shared__ float smem[];
  float* q = smem;
  float* warp_max = q + a.lat;
  float* warp_sum = warp_max + kWarps;
  float* warp_acc = warp_sum + kWarps;
  const int64_t item = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* out = a.out + item * a.ld_out;
  int64_t len = a.lens[item];
  if (len < 1) {
    for (int64_t c = threadIdx.x; c < a.kvr; c += blockDim.x) out[c] = 0.0f;
    return;
  }
  if (len > a.max_blocks * a.block_tokens) len = a.max_blocks * a.block_tokens;
  for (int64_t d = threadIdx.x; d < a.lat; d += blockDim.x) q[d] = a.q[item * a.ldq + d];
  __syncthreads();
  const int32_t* table = a.block_tables + static_cast<int64_t>(a.table_rows[item]) * a.max_blocks;

  float m = -INFINITY, l = 0.0f;
  float acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = 0.0f;
  for (int64_t s = warp; s < len; s += kWarps) {
    const int64_t block = table[s / a.block_tokens];
    const float* row =
        a.cache + ((block * a.num_layers + a.layer) * a.block_tokens + s % a.block_tokens) * a.lat;
    float dot = 0.0f;
    for (int64_t d = lane; d < a.lat; d += 32) dot = fmaf(q[d], row[d], dot);
    const float score = WarpSum(dot) * a.scale;
    const float m_new = fmaxf(m, score);
    const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(score - m_new);
    l = l * correction + p;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t c = lane + 32 * j;
      if (c < a.kvr) acc[j] = acc[j] * correction + p * row[c];
    }
    m = m_new;
  }
  if (lane == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t c = lane + 32 * j;
    if (c < a.kvr) warp_acc[warp * a.kvr + c] = acc[j];
  }
  __syncthreads();
  // Warps that saw no key have max -inf and weigh exp(-inf) = 0; len >= 1 keeps mx finite.
  float mx = -INFINITY;
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, warp_max[w]);
  float weight[kWarps];
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = warp_sum[w] > 0.0f ? expf(warp_max[w] - mx) : 0.0f;
    total += weight[w] * warp_sum[w];
  }
  const float inv = 1.0f / total;
  for (int64_t c = threadIdx.x; c < a.kvr; c += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += weight[w] * warp_acc[w * a.kvr + c];
    out[c] = v * inv;
  }
}

}  // namespace

cudaError_t LaunchLatentAttention(const LatentAttentionArgs& a, cudaStream_t stream) {
  if (a.items <= 0) return cudaSuccess;
  if (a.kvr > kAttentionMaxKvr) return cudaErrorInvalidValue;
  const size_t smem = sizeof(float) * static_cast<size_t>(a.lat + 2 * kWarps + kWarps * a.kvr);
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(
        LatentAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  LatentAttentionKernel<<<static_cast<unsigned>(a.items), kWarps * 32, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
