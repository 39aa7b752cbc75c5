#include <cmath>

#include "engine/cuda/device_util.cuh"
#include "engine/cuda/gate.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarps = 4;                         // tokens per block, one warp each
constexpr int kSlots = kGateMaxExperts / 32;      // experts per lane: expert lane + 32 * slot
constexpr int kGroupSlots = kGateMaxGroups / 32;  // groups per lane, the same way

// (v, i) <- (ov, oi) when that is the better candidate: larger value, then lower index; an
// index below 0 is no candidate.
__device__ __forceinline__ void Better(float ov, int oi, float* v, int* i) {
  if (oi < 0) return;
  if (*i < 0 || ov > *v || (ov == *v && oi < *i)) {
    *v = ov;
    *i = oi;
  }
}

// The warp's best candidate (every lane's (v, i) in); lane 0's answer in every lane.
__device__ __forceinline__ void WarpBest(float* v, int* i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFull, *v, o);
    const int oi = __shfl_xor_sync(kFull, *i, o);
    Better(ov, oi, v, i);
  }
  *v = __shfl_sync(kFull, *v, 0);
  *i = __shfl_sync(kFull, *i, 0);
}

// ArgMax over experts [lo, hi) whose bit in `taken` (per lane, bit = slot) is clear, except
// `skip`: the largest choice, ties to the lowest id (ops::TopK's order). -1 when none.
__device__ __forceinline__ int WarpArgMax(const float (&choice)[kSlots], unsigned taken, int lo,
                                          int hi, int skip, float* value) {
  const int lane = threadIdx.x % 32;
  float v = 0.0f;
  int best = -1;
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    const int i = lane + 32 * j;
    if (i >= lo && i < hi && i != skip && ((taken >> j) & 1u) == 0) Better(choice[j], i, &v, &best);
  }
  WarpBest(&v, &best);
  *value = v;
  return best;
}

// Lane-uniform select of element `slot` of a per-lane array (no local memory).
template <int kN>
__device__ __forceinline__ float Pick(const float (&a)[kN], int slot) {
  float v = 0.0f;
#pragma unroll
  for (int j = 0; j < kN; ++j) {
    if (j == slot) v = a[j];
  }
  return v;
}

// One warp per token; expert i lives in lane i % 32, slot i / 32 (registers only).
__global__ void __launch_bounds__(kWarps * 32) GateKernel(GateArgs a) {
  const int lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (t >= a.tokens) return;  // the whole warp
  const int e = a.experts;
  const float* logits = a.logits + t * e;
  float scores[kSlots];
  float choice[kSlots];
  if (a.sigmoid) {
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int i = lane + 32 * j;
      scores[j] = i < e ? 1.0f / (1.0f + expf(-logits[i])) : 0.0f;
    }
  } else {
    // ops::Softmax: max, exp, the float sum (here in warp order), then times 1/sum.
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int i = lane + 32 * j;
      if (i < e) mx = fmaxf(mx, logits[i]);
    }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, o));
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int i = lane + 32 * j;
      scores[j] = i < e ? expf(logits[i] - mx) : 0.0f;
      sum += scores[j];
    }
    sum = WarpSum(sum);
    const float inv = 1.0f / sum;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) scores[j] *= inv;
  }
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    const int i = lane + 32 * j;
    choice[j] = scores[j] + (a.method == 2 && a.bias != nullptr && i < e ? a.bias[i] : 0.0f);
  }
  if (a.method != 0 && a.n_group > 1) {
    const int per = e / a.n_group;
    // Group g's score lands in lane g % 32, slot g / 32.
    float group_score[kGroupSlots];
#pragma unroll
    for (int j = 0; j < kGroupSlots; ++j) group_score[j] = 0.0f;
    for (int g = 0; g < a.n_group; ++g) {
      float first_value = 0.0f, second_value = 0.0f;
      const int first = WarpArgMax(choice, 0u, g * per, (g + 1) * per, -1, &first_value);
      float score = first_value;
      if (a.method == 2) {
        WarpArgMax(choice, 0u, g * per, (g + 1) * per, first, &second_value);
        score = first_value + second_value;
      }
#pragma unroll
      for (int j = 0; j < kGroupSlots; ++j) {
        if (g == lane + 32 * j) group_score[j] = score;
      }
    }
    // The topk_group best groups (ties: lower group id), as a bit mask in every lane.
    unsigned long long kept = 0;
    unsigned group_taken = 0;  // per lane, bit = group slot
    for (int n = 0; n < a.topk_group; ++n) {
      float v = 0.0f;
      int best = -1;
#pragma unroll
      for (int j = 0; j < kGroupSlots; ++j) {
        const int g = lane + 32 * j;
        if (g < a.n_group && ((group_taken >> j) & 1u) == 0) Better(group_score[j], g, &v, &best);
      }
      WarpBest(&v, &best);
      kept |= 1ull << best;
      if (best % 32 == lane) group_taken |= 1u << (best / 32);
    }
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int i = lane + 32 * j;
      if (i < e && ((kept >> (i / per)) & 1ull) == 0) choice[j] = -INFINITY;
    }
  }
  unsigned taken = 0;
  int32_t* ids = a.ids + t * a.top_k;
  float* weights = a.weights + t * a.top_k;
  double sum = 0;
  for (int j = 0; j < a.top_k; ++j) {
    float unused;
    const int id = WarpArgMax(choice, taken, 0, e, -1, &unused);
    if (id % 32 == lane) taken |= 1u << (id / 32);
    const float w = __shfl_sync(kFull, Pick(scores, id / 32), id % 32);
    if (lane == 0) {
      ids[j] = id;
      weights[j] = w;
      sum += w;
    }
  }
  if (lane != 0) return;
  if (a.top_k > 1 && a.norm_topk_prob) {
    const float denom = static_cast<float>(sum) + 1e-20f;
    for (int j = 0; j < a.top_k; ++j) weights[j] /= denom;
  }
  for (int j = 0; j < a.top_k; ++j) {
    weights[j] = static_cast<float>(weights[j] * a.routed_scaling_factor);
  }
}

}  // namespace

cudaError_t LaunchGate(const GateArgs& a, cudaStream_t stream) {
  if (a.tokens <= 0) return cudaSuccess;
  if (a.experts > kGateMaxExperts || a.n_group > kGateMaxGroups || a.top_k > a.experts ||
      a.topk_group > a.n_group) {
    return cudaErrorInvalidValue;
  }
  GateKernel<<<GridFor(a.tokens, kWarps), kWarps * 32, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
