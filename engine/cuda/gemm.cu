#include <cuda_bf16.h>

#include "engine/cuda/gemm.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr int kTile = 64;
constexpr int kDepth = 32;
constexpr int kThreads = 256;  // 16 x 16, each 4 x 4 outputs

template <WeightType kType>
__global__ void TiledGemmKernel(TiledGemmArgs a) {
  __shared__ float xs[kDepth][kTile + 1];
  __shared__ float ws[kDepth][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t k = a.w.k;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
    for (int i = threadIdx.x; i < kTile * kDepth; i += kThreads) {
      const int r = i / kDepth, kk = i % kDepth;
      const int64_t gk = k0 + kk;
      const int64_t gm = m0 + r, gn = n0 + r;
      xs[kk][r] = (gm < a.m && gk < k) ? a.x[gm * a.ldx + gk] : 0.0f;
      ws[kk][r] = (gn < a.w.n && gk < k) ? LoadWeight<kType>(a.w, gn, gk) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kDepth; ++kk) {
      float xv[4], wv[4];
      for (int i = 0; i < 4; ++i) {
        xv[i] = xs[kk][ty + 16 * i];
        wv[i] = ws[kk][tx + 16 * i];
      }
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xv[i], wv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + ty + 16 * i;
    if (gm >= a.m) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tx + 16 * j;
      if (gn < a.w.n) a.y[gm * a.ldy + gn] = acc[i][j];
    }
  }
}

__global__ void F32ToBf16Kernel(F32ToBf16Args a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.rows * a.cols) return;
  const int64_t r = i / a.cols, c = i % a.cols;
  a.out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(a.x[r * a.ldx + c]));
}

}  // namespace

cudaError_t LaunchTiledGemm(const TiledGemmArgs& a, cudaStream_t stream) {
  if (a.m <= 0 || a.w.n <= 0) return cudaSuccess;
  const dim3 grid(GridFor(a.w.n, kTile), GridFor(a.m, kTile));
  switch (a.w.type) {
    case WeightType::kF32:
      TiledGemmKernel<WeightType::kF32><<<grid, kThreads, 0, stream>>>(a);
      break;
    case WeightType::kBf16:
      TiledGemmKernel<WeightType::kBf16><<<grid, kThreads, 0, stream>>>(a);
      break;
    case WeightType::kF8E4M3:
      TiledGemmKernel<WeightType::kF8E4M3><<<grid, kThreads, 0, stream>>>(a);
      break;
  }
  return cudaGetLastError();
}

cudaError_t LaunchF32ToBf16(const F32ToBf16Args& a, cudaStream_t stream) {
  const int64_t total = a.rows * a.cols;
  if (total <= 0) return cudaSuccess;
  F32ToBf16Kernel<<<GridFor(total, 256), 256, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
