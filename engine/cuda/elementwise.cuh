#ifndef MOESERVE_ENGINE_CUDA_ELEMENTWISE_CUH_
#define MOESERVE_ENGINE_CUDA_ELEMENTWISE_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda/device_util.cuh"

namespace moeserve::engine::cuda {

// out[i] = silu(gate[i]) * up[i] (out may alias either input).
struct SiluMulArgs {
  const float* gate = nullptr;
  const float* up = nullptr;
  int64_t n = 0;
  float* out = nullptr;
};
cudaError_t LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream);

// x[i] += y[i].
struct AddArgs {
  float* x = nullptr;
  const float* y = nullptr;
  int64_t n = 0;
};
cudaError_t LaunchAdd(const AddArgs& args, cudaStream_t stream);

// out[r, :] = table[ids[r], :] widened to f32 (type kF32 or kBf16); zeros for ids outside
// [0, vocab).
struct EmbeddingArgs {
  const void* table = nullptr;
  WeightType type = WeightType::kBf16;
  int64_t vocab = 0;
  int64_t dim = 0;
  const int32_t* ids = nullptr;
  int64_t rows = 0;
  float* out = nullptr;
};
cudaError_t LaunchEmbedding(const EmbeddingArgs& args, cudaStream_t stream);

// dst[rows[i] * ld_dst + c] = src[i * ld_src + c] for i < n, c < width; rows below 0 are
// skipped (the CPU backend refuses them). dst holds float32, or bfloat16 (round to nearest
// even, as F32ToBf16) when dst_bf16.
struct ScatterRowsArgs {
  const float* src = nullptr;
  int64_t ld_src = 0;
  int64_t n = 0;
  int64_t width = 0;
  const int64_t* rows = nullptr;
  void* dst = nullptr;
  int64_t ld_dst = 0;
  bool dst_bf16 = false;
};
cudaError_t LaunchScatterRows(const ScatterRowsArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_ELEMENTWISE_CUH_
