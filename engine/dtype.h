#ifndef MOESERVE_ENGINE_DTYPE_H_
#define MOESERVE_ENGINE_DTYPE_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moeserve::engine {

// Storage types a checkpoint may hold. Compute happens in kF32 or kBf16 (see ComputeDType).
enum class DType { kF32, kBf16, kF16, kF8E4M3 };

// Bytes per element.
int DTypeSize(DType dtype);
// The safetensors name ("F32", "BF16", "F16", "F8_E4M3").
absl::string_view DTypeName(DType dtype);
// Parses a safetensors dtype name; InvalidArgument for names we do not load.
absl::StatusOr<DType> ParseDType(absl::string_view name);

// The precision weights are kept in for compute. Activations and sums are always float32.
enum class ComputeDType { kF32, kBf16 };
absl::StatusOr<ComputeDType> ParseComputeDType(absl::string_view name);

// The KV cache's element type from its flag (--kv-cache-dtype): "f32"/"float32" or
// "bf16"/"bfloat16"; "auto" is BF16 when the steps run on a backend in bf16 compute and F32
// otherwise. InvalidArgument for other names, and for BF16 without a backend (the host runner
// computes over a float32 cache).
absl::StatusOr<DType> ParseKvCacheDType(absl::string_view name, ComputeDType compute,
                                        bool on_backend);

inline float Bf16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t v);
// OCP FP8 E4M3 (finite-only variant used by torch.float8_e4m3fn): bias 7, max 448, 0x7f/0xff NaN.
float F8E4M3ToF32(uint8_t v);
// Round-to-nearest-even conversion with saturation to +-448 (what torch's cast does for in-range
// values; out-of-range values saturate here instead of becoming NaN).
uint8_t F32ToF8E4M3(float f);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_DTYPE_H_
