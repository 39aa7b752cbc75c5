#ifndef MOESERVE_ENGINE_CUDA_DEVICE_UTIL_CUH_
#define MOESERVE_ENGINE_CUDA_DEVICE_UTIL_CUH_

// Plain types and device helpers shared by the kernels. Seen by nvcc: no absl, gRPC or
// protobuf headers here or in anything this includes.
#include <cuda_runtime.h>

#include <cstdint>

namespace moeserve::engine::cuda {

// Weight storage types the kernels read (engine::DType without the absl-dependent header).
enum class WeightType : int { kF32 = 0, kBf16 = 1, kF8E4M3 = 2 };

inline constexpr int kFp8Block = 128;

// A row-major [n, k] weight; scale_inv is [ceil(n/128), ceil(k/128)] for kF8E4M3.
struct DeviceWeight {
  WeightType type = WeightType::kF32;
  const void* data = nullptr;
  const float* scale_inv = nullptr;
  int64_t n = 0;
  int64_t k = 0;
};

inline unsigned GridFor(int64_t total, int threads) {
  return static_cast<unsigned>((total + threads - 1) / threads);
}

#ifdef __CUDACC__
__device__ __forceinline__ float Bf16Bits(uint16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}

// Round to nearest even, NaN kept a NaN: the bits engine::F32ToBf16 gives on the host.
__device__ __forceinline__ uint16_t F32ToBf16Bits(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// OCP E4M3 (torch.float8_e4m3fn): bias 7, no infinities, 0x7f/0xff NaN; same as F8E4M3ToF32.
__device__ __forceinline__ float Fp8E4M3Bits(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80u) << 24;
  const uint32_t exponent = (v >> 3) & 0xfu;
  const uint32_t mantissa = v & 0x7u;
  if (exponent == 0xf && mantissa == 0x7) return __uint_as_float(0x7fc00000u);
  if (exponent == 0) {
    const float m = static_cast<float>(mantissa) * 0.001953125f;  // m * 2^-9, exact
    return sign ? -m : m;
  }
  return __uint_as_float(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

// Element (r, c) of a weight, scaled for FP8.
template <WeightType kType>
__device__ __forceinline__ float LoadWeight(const DeviceWeight& w, int64_t r, int64_t c) {
  if constexpr (kType == WeightType::kF32) {
    return static_cast<const float*>(w.data)[r * w.k + c];
  } else if constexpr (kType == WeightType::kBf16) {
    return Bf16Bits(static_cast<const uint16_t*>(w.data)[r * w.k + c]);
  } else {
    const int64_t scale_cols = (w.k + kFp8Block - 1) / kFp8Block;
    return Fp8E4M3Bits(static_cast<const uint8_t*>(w.data)[r * w.k + c]) *
           w.scale_inv[(r / kFp8Block) * scale_cols + c / kFp8Block];
  }
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
#endif  // __CUDACC__

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_DEVICE_UTIL_CUH_
