#include "engine/cuda/device_util.cuh"
#include "engine/cuda/rope.cuh"

namespace moeserve::engine::cuda {
namespace {

__global__ void RopeKernel(RopeArgs a) {
  const int64_t half = a.dim / 2;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= a.rows * half) return;
  const int64_t r = t / half, i = t % half;
  const double angle = static_cast<double>(a.positions[r / a.rows_per_position]) *
                       static_cast<double>(a.inv_freq[i]);
  double s, c;
  sincos(angle, &s, &c);
  const float cf = static_cast<float>(c * a.mscale), sf = static_cast<float>(s * a.mscale);
  float* p = a.x + r * a.ld + a.offset + 2 * i;
  const float x0 = p[0], x1 = p[1];
  p[0] = x0 * cf - x1 * sf;
  p[1] = x1 * cf + x0 * sf;
}

}  // namespace

cudaError_t LaunchRope(const RopeArgs& a, cudaStream_t stream) {
  const int64_t total = a.rows * (a.dim / 2);
  if (total <= 0) return cudaSuccess;
  RopeKernel<<<GridFor(total, 256), 256, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
