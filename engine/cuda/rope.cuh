#ifndef MOESERVE_ENGINE_CUDA_ROPE_CUH_
#define MOESERVE_ENGINE_CUDA_ROPE_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace moeserve::engine::cuda {

// Rotates pair i of x[r * ld + offset ...] by positions[r / rows_per_position] * inv_freq[i]
// (angle, cos and sin in double, times mscale, then float as ops::RopeAngles). In place.
struct RopeArgs {
  float* x = nullptr;
  int64_t rows = 0;
  int64_t ld = 0;
  int64_t offset = 0;
  int64_t dim = 0;
  const int32_t* positions = nullptr;
  int64_t rows_per_position = 1;
  const float* inv_freq = nullptr;
  double mscale = 1.0;
};
cudaError_t LaunchRope(const RopeArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_ROPE_CUH_
