#ifndef MOESERVE_ENGINE_CUDA_GATE_CUH_
#define MOESERVE_ENGINE_CUDA_GATE_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace moeserve::engine::cuda {

inline constexpr int kGateMaxExperts = 512;
inline constexpr int kGateMaxGroups = 64;

// The MoE router per token, ops::RouteToken's algorithm step for step (one warp per token,
// every value in registers): scores (softmax or sigmoid), choice = scores (+ bias for noaux_tc),
// groups ranked by their top-2 sum (noaux_tc) or max (group_limited_greedy) with all but
// topk_group dropped, top-k (ties: lower id), weights = scores (normalised when norm_topk_prob
// and k > 1) times routed_scaling_factor. The softmax sum is a warp reduction (the reference
// sums in id order: the scores may differ in the last bit). experts <= kGateMaxExperts,
// n_group <= kGateMaxGroups.
struct GateArgs {
  const float* logits = nullptr;  // [tokens, experts]
  const float* bias = nullptr;    // [experts] or null
  int64_t tokens = 0;
  int experts = 0;
  int top_k = 0;
  int n_group = 1;
  int topk_group = 1;
  bool sigmoid = false;  // else softmax
  int method = 0;        // 0 greedy, 1 group_limited_greedy, 2 noaux_tc
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int32_t* ids = nullptr;    // [tokens, top_k]
  float* weights = nullptr;  // [tokens, top_k]
};
cudaError_t LaunchGate(const GateArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_GATE_CUH_
