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

constexpr int kSkinnyWarps = 4;
constexpr int kSkinnyRowsPerWarp = 2;

__device__ __forceinline__ float RoundBf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

template <int kM, bool kVector>
__global__ void __launch_bounds__(kSkinnyWarps * 32) SkinnyGemmKernel(SkinnyGemmArgs a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.y;
  const float* x = a.x + b * a.stride_x;
  const uint16_t* w = a.w + b * a.stride_w;
  float* y = a.y + b * a.stride_y;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kSkinnyWarps + warp) * kSkinnyRowsPerWarp;
  float acc[kSkinnyRowsPerWarp][kM];
#pragma unroll
  for (int r = 0; r < kSkinnyRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < kM; ++i) acc[r][i] = 0.0f;
  }
  if constexpr (kVector) {
    for (int64_t k = lane * 8; k < a.k; k += 32 * 8) {
      float wv[kSkinnyRowsPerWarp][8];
#pragma unroll
      for (int r = 0; r < kSkinnyRowsPerWarp; ++r) {
        uint4 v = make_uint4(0, 0, 0, 0);
        if (n0 + r < a.n) v = *reinterpret_cast<const uint4*>(w + (n0 + r) * a.k + k);
        const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          wv[r][2 * j] = __uint_as_float(words[j] << 16);
          wv[r][2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
        }
      }
#pragma unroll
      for (int i = 0; i < kM; ++i) {
        if (i >= a.m) break;
        const float4 x0 = *reinterpret_cast<const float4*>(x + i * a.ldx + k);
        const float4 x1 = *reinterpret_cast<const float4*>(x + i * a.ldx + k + 4);
        const float xv[8] = {RoundBf16(x0.x), RoundBf16(x0.y), RoundBf16(x0.z), RoundBf16(x0.w),
                             RoundBf16(x1.x), RoundBf16(x1.y), RoundBf16(x1.z), RoundBf16(x1.w)};
#pragma unroll
        for (int r = 0; r < kSkinnyRowsPerWarp; ++r) {
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[r][i] = fmaf(xv[j], wv[r][j], acc[r][i]);
        }
      }
    }
  } else {
    for (int64_t k = lane; k < a.k; k += 32) {
      float wv[kSkinnyRowsPerWarp];
#pragma unroll
      for (int r = 0; r < kSkinnyRowsPerWarp; ++r) {
        wv[r] = n0 + r < a.n ? Bf16Bits(w[(n0 + r) * a.k + k]) : 0.0f;
      }
#pragma unroll
      for (int i = 0; i < kM; ++i) {
        if (i >= a.m) break;
        const float xv = RoundBf16(x[i * a.ldx + k]);
#pragma unroll
        for (int r = 0; r < kSkinnyRowsPerWarp; ++r) acc[r][i] = fmaf(xv, wv[r], acc[r][i]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kSkinnyRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < kM; ++i) {
      if (i >= a.m) break;
      const float v = WarpSum(acc[r][i]);
      if (lane == 0 && n0 + r < a.n) y[i * a.ldy + n0 + r] = v;
    }
  }
}

template <int kM>
cudaError_t LaunchSkinny(const SkinnyGemmArgs& a, bool vector, cudaStream_t stream) {
  const dim3 grid(GridFor(a.n, kSkinnyWarps * kSkinnyRowsPerWarp), static_cast<unsigned>(a.batch));
  if (vector) {
    SkinnyGemmKernel<kM, true><<<grid, kSkinnyWarps * 32, 0, stream>>>(a);
  } else {
    SkinnyGemmKernel<kM, false><<<grid, kSkinnyWarps * 32, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

cudaError_t LaunchSkinnyGemm(const SkinnyGemmArgs& a, cudaStream_t stream) {
  if (a.m <= 0 || a.n <= 0 || a.batch <= 0) return cudaSuccess;
  if (a.m > kSkinnyMaxM) return cudaErrorInvalidValue;
  // 16-byte loads need every row start of x and W 16-byte aligned, in every product.
  const bool vector = a.k % 8 == 0 && a.ldx % 4 == 0 && a.stride_x % 4 == 0 &&
                      a.stride_w % 8 == 0 && Aligned16(a.x) && Aligned16(a.w);
  if (a.m == 1) return LaunchSkinny<1>(a, vector, stream);
  if (a.m == 2) return LaunchSkinny<2>(a, vector, stream);
  if (a.m <= 4) return LaunchSkinny<4>(a, vector, stream);
  return LaunchSkinny<8>(a, vector, stream);
}

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
