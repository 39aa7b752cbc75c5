#include <cmath>

#include "engine/cuda/device_util.cuh"
#include "engine/cuda/gate.cuh"

namespace moeserve::engine::cuda {
namespace {

// Index of the largest v[i] not yet taken (ties: lowest index), over n values.
__device__ int ArgMaxUntaken(const float* v, int n, const bool* taken) {
  int best = -1;
  for (int i = 0; i < n; ++i) {
    if (taken[i]) continue;
    if (best < 0 || v[i] > v[best]) best = i;
  }
  return best;
}

__global__ void GateKernel(GateArgs a) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= a.tokens) return;
  const int e = a.experts;
  const float* logits = a.logits + t * e;
  float scores[kGateMaxExperts];
  float choice[kGateMaxExperts];
  bool taken[kGateMaxExperts];
  if (a.sigmoid) {
    for (int i = 0; i < e; ++i) scores[i] = 1.0f / (1.0f + expf(-logits[i]));
  } else {
    // ops::Softmax: max, exp and a float sum in index order, then times 1/sum.
    float mx = -INFINITY;
    for (int i = 0; i < e; ++i) mx = fmaxf(mx, logits[i]);
    float sum = 0.0f;
    for (int i = 0; i < e; ++i) {
      scores[i] = expf(logits[i] - mx);
      sum += scores[i];
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < e; ++i) scores[i] *= inv;
  }
  for (int i = 0; i < e; ++i) {
    choice[i] = scores[i] + (a.method == 2 && a.bias != nullptr ? a.bias[i] : 0.0f);
  }
  if (a.method != 0 && a.n_group > 1) {
    const int per = e / a.n_group;
    float group_score[kGateMaxGroups];
    bool group_taken[kGateMaxGroups];
    for (int g = 0; g < a.n_group; ++g) {
      const float* s = choice + g * per;
      for (int i = 0; i < per; ++i) taken[i] = false;
      const int first = ArgMaxUntaken(s, per, taken);
      if (a.method == 2) {
        taken[first] = true;
        group_score[g] = s[first] + s[ArgMaxUntaken(s, per, taken)];
      } else {
        group_score[g] = s[first];
      }
      group_taken[g] = false;
    }
    for (int j = 0; j < a.topk_group; ++j) {
      group_taken[ArgMaxUntaken(group_score, a.n_group, group_taken)] = true;
    }
    for (int i = 0; i < e; ++i) {
      if (!group_taken[i / per]) choice[i] = -INFINITY;
    }
  }
  for (int i = 0; i < e; ++i) taken[i] = false;
  int32_t* ids = a.ids + t * a.top_k;
  float* weights = a.weights + t * a.top_k;
  double sum = 0;
  for (int j = 0; j < a.top_k; ++j) {
    const int id = ArgMaxUntaken(choice, e, taken);
    taken[id] = true;
    ids[j] = id;
    weights[j] = scores[id];
    sum += weights[j];
  }
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
  if (a.experts > kGateMaxExperts || a.n_group > kGateMaxGroups) return cudaErrorInvalidValue;
  GateKernel<<<GridFor(a.tokens, 64), 64, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
