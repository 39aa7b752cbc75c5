#ifndef MOESERVE_ENGINE_WEIGHTS_H_
#define MOESERVE_ENGINE_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/dtype.h"

namespace moeserve::engine {

// A weight matrix ready for compute: row-major [rows, cols] (Hugging Face's [out, in]) in kF32
// or kBf16. Either points into the checkpoint's mapping (stored type == compute type: no copy),
// or owns a converted copy (widened, or FP8 dequantised with its 128x128 block scales).
// Lifetime: when `owned` is null, `data` borrows from the Checkpoint's memory mapping, so the
// Checkpoint must outlive the Matrix. Copies of a Matrix share `owned`.
struct Matrix {
  DType dtype = DType::kF32;  // kF32 or kBf16 only
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  std::shared_ptr<std::vector<uint8_t>> owned;  // null when `data` is mapped

  const float* f32() const { return static_cast<const float*>(data); }
  const uint16_t* bf16() const { return static_cast<const uint16_t*>(data); }
  int64_t bytes() const { return rows * cols * (dtype == DType::kF32 ? 4 : 2); }
  // Element (r, c) as float; for tests and slow paths.
  float At(int64_t r, int64_t c) const;
};

// Loads a 2-D weight for compute. `scale_inv` is required iff `weight` is F8_E4M3; the result
// is weight * scale_inv[r/128][c/128]. Data is used in place when its dtype equals the compute
// dtype and it is suitably aligned.
absl::StatusOr<Matrix> LoadMatrix(const TensorInfo& weight, const TensorInfo* scale_inv,
                                  ComputeDType compute);

// Loads a 1-D (or any-shape) tensor widened to float32 (norm weights, biases).
absl::StatusOr<std::vector<float>> LoadVectorF32(const TensorInfo& tensor);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_WEIGHTS_H_
