#include "engine/cuda/elementwise.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void SiluMulKernel(SiluMulArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= a.n) return;
  const float g = a.gate[i];
  a.out[i] = g / (1.0f + expf(-g)) * a.up[i];
}

__global__ void AddKernel(AddArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < a.n) a.x[i] += a.y[i];
}

__global__ void EmbeddingKernel(EmbeddingArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= a.rows * a.dim) return;
  const int64_t r = i / a.dim, c = i % a.dim;
  const int64_t id = a.ids[r];
  float v = 0.0f;
  if (id >= 0 && id < a.vocab) {
    v = a.type == WeightType::kF32
            ? static_cast<const float*>(a.table)[id * a.dim + c]
            : Bf16Bits(static_cast<const uint16_t*>(a.table)[id * a.dim + c]);
  }
  a.out[i] = v;
}

__global__ void ScatterRowsKernel(ScatterRowsArgs a) {
  const int64_t i = blockIdx.x;
  const int64_t row = a.rows[i];
  if (row < 0) return;
  const float* src = a.src + i * a.ld_src;
  if (a.dst_bf16) {
    uint16_t* dst = static_cast<uint16_t*>(a.dst) + row * a.ld_dst;
    for (int64_t c = threadIdx.x; c < a.width; c += blockDim.x) dst[c] = F32ToBf16Bits(src[c]);
  } else {
    float* dst = static_cast<float*>(a.dst) + row * a.ld_dst;
    for (int64_t c = threadIdx.x; c < a.width; c += blockDim.x) dst[c] = src[c];
  }
}

}  // namespace

cudaError_t LaunchScatterRows(const ScatterRowsArgs& a, cudaStream_t stream) {
  if (a.n <= 0 || a.width <= 0) return cudaSuccess;
  ScatterRowsKernel<<<static_cast<unsigned>(a.n), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchSiluMul(const SiluMulArgs& a, cudaStream_t stream) {
  if (a.n <= 0) return cudaSuccess;
  SiluMulKernel<<<GridFor(a.n, kThreads), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(const AddArgs& a, cudaStream_t stream) {
  if (a.n <= 0) return cudaSuccess;
  AddKernel<<<GridFor(a.n, kThreads), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchEmbedding(const EmbeddingArgs& a, cudaStream_t stream) {
  const int64_t total = a.rows * a.dim;
  if (total <= 0) return cudaSuccess;
  EmbeddingKernel<<<GridFor(total, kThreads), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
