#ifndef MOESERVE_ENGINE_CUDA_GEMM_CUH_
#define MOESERVE_ENGINE_CUDA_GEMM_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda/device_util.cuh"

namespace moeserve::engine::cuda {

// y[m, w.n] = x[m, w.k] * W^T in f32 (x, y row strides ldx, ldy), any WeightType, FP8 scaled
// by its 128x128 block scales on the fly. A shared-memory tiled kernel (64x64 outputs per
// block): the FP8 path and the fallback when cuBLASLt offers no algorithm. Not tensor cores.
struct TiledGemmArgs {
  const float* x = nullptr;
  int64_t m = 0;
  int64_t ldx = 0;
  DeviceWeight w;
  float* y = nullptr;
  int64_t ldy = 0;
};
cudaError_t LaunchTiledGemm(const TiledGemmArgs& args, cudaStream_t stream);

// Decode-sized products with BF16 weights: y[m, n] = bf16(x)[m, k] * W^T for m <= kSkinnyMaxM,
// `batch` of them (product i at x + i * stride_x, W + i * stride_w, y + i * stride_y). Each warp
// streams two weight rows once, 16-byte loads when k % 8 == 0 and the pointers allow; x is rounded
// to bf16 as the cuBLASLt path rounds it, sums in f32. One launch, nothing to convert first.
inline constexpr int64_t kSkinnyMaxM = 8;
struct SkinnyGemmArgs {
  const float* x = nullptr;
  int64_t m = 0;
  int64_t ldx = 0;
  int64_t stride_x = 0;
  const uint16_t* w = nullptr;  // bf16 bits, [n, k] row-major
  int64_t n = 0;
  int64_t k = 0;
  int64_t stride_w = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t stride_y = 0;
  int64_t batch = 1;
};
cudaError_t LaunchSkinnyGemm(const SkinnyGemmArgs& args, cudaStream_t stream);

// out[r, c] = bf16(x[r * ldx + c]) (round to nearest even) for r < rows, c < cols; out is
// contiguous [rows, cols] of bf16 bits. The activations of a BF16 cuBLASLt product.
struct F32ToBf16Args {
  const float* x = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ldx = 0;
  uint16_t* out = nullptr;
};
cudaError_t LaunchF32ToBf16(const F32ToBf16Args& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_GEMM_CUH_
