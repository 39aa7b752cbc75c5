#include "engine/cuda/device_util.cuh"
#include "engine/cuda/rms_norm.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void RmsNormKernel(RmsNormArgs a) {
  __shared__ float partial[kThreads / 32];
  __shared__ float inv;
  const float* x = a.x + static_cast<int64_t>(blockIdx.x) * a.ldx;
  float* out = a.out + static_cast<int64_t>(blockIdx.x) * a.ld_out;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < a.dim; i += kThreads) sum = fmaf(x[i], x[i], sum);
  sum = WarpSum(sum);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
    inv = static_cast<float>(1.0 / sqrt(total / static_cast<double>(a.dim) + a.eps));
  }
  // Every read of x for the sum happens before this barrier, so out may alias x.
  __syncthreads();
  for (int64_t i = threadIdx.x; i < a.dim; i += kThreads) out[i] = x[i] * inv * a.w[i];
}

}  // namespace

cudaError_t LaunchRmsNorm(const RmsNormArgs& a, cudaStream_t stream) {
  if (a.rows <= 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
