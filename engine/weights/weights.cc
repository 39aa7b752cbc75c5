// LoadMatrix / LoadVectorF32: checkpoint tensors to compute-ready float32 or bfloat16.
#include "engine/weights.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/tensor_names.h"

namespace moeserve::engine {
namespace {

constexpr int64_t kBlock = 128;  // FP8 block-scale tile

absl::Status Bad(const TensorInfo& t, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' ", what));
}

// numel of `t`, checking that its byte count matches its shape and dtype.
absl::StatusOr<int64_t> CheckedSize(const TensorInfo& t) {
  int64_t numel = 0;
  if (!CheckedNumel(t.shape, &numel) ||
      static_cast<uint64_t>(numel) * static_cast<uint64_t>(DTypeSize(t.dtype)) != t.nbytes) {
    return Bad(t, absl::StrCat("has ", t.nbytes, " bytes, which does not match shape ",
                               ShapeString(t.shape), " of ", DTypeName(t.dtype)));
  }
  if (numel > 0 && t.data == nullptr) return Bad(t, "has no data");
  return numel;
}

// Reads element i of a (possibly unaligned) non-FP8 tensor as float.
inline float ReadWide(DType dtype, const uint8_t* data, int64_t i) {
  switch (dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, data + 4 * i, 4);
      return f;
    }
    case DType::kBf16:
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, data + 2 * i, 2);
      return dtype == DType::kBf16 ? Bf16ToF32(v) : F16ToF32(v);
    }
    case DType::kF8E4M3:
      return F8E4M3ToF32(data[i]);
  }
  return 0.0f;
}

const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = F8E4M3ToF32(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

// Stores float `f` as element i of the output in the compute dtype.
inline void Store(DType out_dtype, uint8_t* out, int64_t i, float f) {
  if (out_dtype == DType::kF32) {
    std::memcpy(out + 4 * i, &f, 4);
  } else {
    uint16_t v = F32ToBf16(f);
    std::memcpy(out + 2 * i, &v, 2);
  }
}

}  // namespace

float Matrix::At(int64_t r, int64_t c) const {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  const int64_t i = r * cols + c;
  if (dtype == DType::kF32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t v;
  std::memcpy(&v, p + 2 * i, 2);
  return Bf16ToF32(v);
}

absl::StatusOr<Matrix> LoadMatrix(const TensorInfo& weight, const TensorInfo* scale_inv,
                                  ComputeDType compute) {
  if (weight.shape.size() != 2) {
    return Bad(weight, absl::StrCat("has shape ", ShapeString(weight.shape),
                                    "; a matrix must be 2-D"));
  }
  absl::StatusOr<int64_t> numel = CheckedSize(weight);
  if (!numel.ok()) return numel.status();

  Matrix m;
  m.dtype = compute == ComputeDType::kF32 ? DType::kF32 : DType::kBf16;
  m.rows = weight.shape[0];
  m.cols = weight.shape[1];
  const bool fp8 = weight.dtype == DType::kF8E4M3;
  if (fp8 && scale_inv == nullptr) {
    return Bad(weight, absl::StrCat("is F8_E4M3 but has no ", weight.name, kScaleInvSuffix));
  }
  if (!fp8 && scale_inv != nullptr) {
    return Bad(*scale_inv, absl::StrCat("is a block scale for '", weight.name, "', which is ",
                                        DTypeName(weight.dtype), ", not F8_E4M3"));
  }

  if (weight.dtype == m.dtype) {
    const size_t align = static_cast<size_t>(DTypeSize(m.dtype));
    if (reinterpret_cast<uintptr_t>(weight.data) % align == 0) {
      m.data = weight.data;  // borrowed from the mapping
      return m;
    }
  }

  auto owned = std::make_shared<std::vector<uint8_t>>(
      static_cast<size_t>(*numel) * static_cast<size_t>(DTypeSize(m.dtype)));
  uint8_t* out = owned->data();
  if (!fp8) {
    for (int64_t i = 0; i < *numel; ++i) Store(m.dtype, out, i, ReadWide(weight.dtype, weight.data, i));
  } else {
    const std::vector<int64_t> want = {(m.rows + kBlock - 1) / kBlock,
                                       (m.cols + kBlock - 1) / kBlock};
    if (scale_inv->dtype != DType::kF32 || scale_inv->shape != want) {
      return Bad(*scale_inv, absl::StrCat("is ", DTypeName(scale_inv->dtype), " ",
                                          ShapeString(scale_inv->shape), ", expected F32 ",
                                          ShapeString(want)));
    }
    absl::StatusOr<int64_t> scale_numel = CheckedSize(*scale_inv);
    if (!scale_numel.ok()) return scale_numel.status();
    const std::array<float, 256>& table = Fp8Table();
    for (int64_t r = 0; r < m.rows; ++r) {
      const uint8_t* row = weight.data + r * m.cols;
      for (int64_t cb = 0; cb < want[1]; ++cb) {
        const float scale = ReadWide(DType::kF32, scale_inv->data, (r / kBlock) * want[1] + cb);
        const int64_t end = std::min(m.cols, (cb + 1) * kBlock);
        for (int64_t c = cb * kBlock; c < end; ++c) {
          Store(m.dtype, out, r * m.cols + c, table[row[c]] * scale);
        }
      }
    }
  }
  m.data = out;
  m.owned = std::move(owned);
  return m;
}

absl::StatusOr<std::vector<float>> LoadVectorF32(const TensorInfo& tensor) {
  if (tensor.dtype == DType::kF8E4M3) {
    return Bad(tensor, "is F8_E4M3; only Linear weights may be FP8");
  }
  absl::StatusOr<int64_t> numel = CheckedSize(tensor);
  if (!numel.ok()) return numel.status();
  std::vector<float> out(static_cast<size_t>(*numel));
  for (int64_t i = 0; i < *numel; ++i) {
    out[static_cast<size_t>(i)] = ReadWide(tensor.dtype, tensor.data, i);
  }
  return out;
}

}  // namespace moeserve::engine
