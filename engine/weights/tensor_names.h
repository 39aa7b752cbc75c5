#ifndef MOESERVE_ENGINE_WEIGHTS_TENSOR_NAMES_H_
#define MOESERVE_ENGINE_WEIGHTS_TENSOR_NAMES_H_

#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"

namespace moeserve::engine {

// Where a Hugging Face tensor name sits: "model.layers.3.mlp.experts.7.up_proj.weight" is layer 3,
// expert 7; "model.layers.3.self_attn.o_proj.weight" layer 3, no expert; "lm_head.weight" layer -1.
struct TensorLocation {
  int64_t layer = -1;
  std::optional<int64_t> expert;
};
TensorLocation LocateTensor(absl::string_view name);

// The F8 block-scale companion of a weight: "X.weight" -> "X.weight_scale_inv".
inline constexpr absl::string_view kScaleInvSuffix = "_scale_inv";

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_WEIGHTS_TENSOR_NAMES_H_
