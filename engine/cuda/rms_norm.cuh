#ifndef MOESERVE_ENGINE_CUDA_RMS_NORM_CUH_
#define MOESERVE_ENGINE_CUDA_RMS_NORM_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace moeserve::engine::cuda {

// out[r, i] = x[r, i] / sqrt(mean(x[r]^2) + eps) * w[i]; one block per row. out may alias x.
struct RmsNormArgs {
  const float* x = nullptr;
  int64_t ldx = 0;
  const float* w = nullptr;
  float* out = nullptr;
  int64_t ld_out = 0;
  int64_t rows = 0;
  int64_t dim = 0;
  double eps = 1e-6;
};
cudaError_t LaunchRmsNorm(const RmsNormArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_RMS_NORM_CUH_
