#ifndef MOESERVE_ENGINE_CUDA_ROUTED_EXPERTS_CUH_
#define MOESERVE_ENGINE_CUDA_ROUTED_EXPERTS_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda/device_util.cuh"

namespace moeserve::engine::cuda {

// One expert's weights in device memory (engine::ExpertWeightPointers, field for field).
struct ExpertPointers {
  const void* gate = nullptr;
  const void* up = nullptr;
  const void* down = nullptr;
  const float* gate_scale = nullptr;
  const float* up_scale = nullptr;
  const float* down_scale = nullptr;
};

// One MoE layer's routed experts with the routing on the device (engine::RoutedExpertsArgs),
// in four launches and no host synchronisation:
//  1. one block counts each expert's slots, lays the experts' rows out one after another and
//     lists the 64-row tiles of every expert;
//  2. gate and up products of every tile (bf16 tensor cores, f32 sums; x rounded to bf16),
//     silu(gate) * up into h[rows, inter] (f32);
//  3. the down products of every tile into y[rows, hidden];
//  4. out[t] = sum over j in order of weights[t, j] * y[row of (t, j)].
// The grids of 2 and 3 are sized for the most tiles a routing can have; blocks past the real
// count return at once. Slots whose id is outside [0, n_experts) contribute zero.
// Weights kBf16 or kF8E4M3 (128x128 block scales).
struct RoutedExpertsArgs {
  const float* x = nullptr;  // [n, hidden]
  int64_t n = 0;
  int64_t k = 0;
  int64_t hidden = 0;
  int64_t inter = 0;
  int64_t n_experts = 0;
  WeightType type = WeightType::kBf16;
  const ExpertPointers* experts = nullptr;  // [n_experts], device memory
  const int32_t* ids = nullptr;             // [n * k]
  const float* weights = nullptr;           // [n * k]
  float* out = nullptr;                     // [n, hidden]
  void* scratch = nullptr;                  // RoutedExpertsScratchBytes(n * k, ...) bytes
};
size_t RoutedExpertsScratchBytes(int64_t slots, int64_t n_experts, int64_t hidden, int64_t inter);
cudaError_t LaunchRoutedExperts(const RoutedExpertsArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_ROUTED_EXPERTS_CUH_
