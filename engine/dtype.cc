#include "engine/dtype.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace moeserve::engine {

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBf16:
    case DType::kF16:
      return 2;
    case DType::kF8E4M3:
      return 1;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBf16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF8E4M3:
      return "F8_E4M3";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBf16;
  if (name == "F16") return DType::kF16;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported tensor dtype '", name, "' (supported: F32, BF16, F16, F8_E4M3)"));
}

absl::StatusOr<ComputeDType> ParseComputeDType(absl::string_view name) {
  if (name == "f32" || name == "float32") return ComputeDType::kF32;
  if (name == "bf16" || name == "bfloat16") return ComputeDType::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("compute dtype '", name, "' is not one of bf16, f32"));
}

absl::StatusOr<DType> ParseKvCacheDType(absl::string_view name, ComputeDType compute,
                                        bool on_backend) {
  DType dtype;
  if (name == "auto") {
    dtype = on_backend && compute == ComputeDType::kBf16 ? DType::kBf16 : DType::kF32;
  } else if (name == "f32" || name == "float32") {
    dtype = DType::kF32;
  } else if (name == "bf16" || name == "bfloat16") {
    dtype = DType::kBf16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache dtype '", name, "' is not one of auto, bf16, f32"));
  }
  if (dtype == DType::kBf16 && !on_backend) {
    return absl::InvalidArgumentError(
        "a bf16 KV cache needs the steps on a backend (--backend): the host engine's cache is "
        "float32");
  }
  return dtype;
}

float F16ToF32(uint16_t v) {
  uint32_t sign = (v >> 15) & 1u;
  int exponent = (v >> 10) & 0x1f;
  uint32_t mantissa = v & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? std::nanf("") : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), exponent - 25);
  }
  return sign ? -magnitude : magnitude;
}

float F8E4M3ToF32(uint8_t v) {
  uint32_t sign = v >> 7;
  int exponent = (v >> 3) & 0xf;
  uint32_t mantissa = v & 0x7u;
  float magnitude;
  if (exponent == 0xf && mantissa == 0x7) {
    magnitude = std::nanf("");
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m/8 * 2^-6
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x8u), exponent - 10);
  }
  return sign ? -magnitude : magnitude;
}

uint8_t F32ToF8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Try every magnitude code and keep the nearest (ties to even code); 127 candidates is cheap
  // enough for a checkpoint writer and obviously correct.
  uint8_t best = 0;
  float best_err = INFINITY;
  for (int code = 0; code <= 0x7e; ++code) {
    float err = std::fabs(F8E4M3ToF32(static_cast<uint8_t>(code)) - a);
    if (err < best_err || (err == best_err && (code & 1) == 0)) {
      best_err = err;
      best = static_cast<uint8_t>(code);
    }
  }
  return sign | best;
}

}  // namespace moeserve::engine
