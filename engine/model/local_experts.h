#ifndef MOESERVE_ENGINE_MODEL_LOCAL_EXPERTS_H_
#define MOESERVE_ENGINE_MODEL_LOCAL_EXPERTS_H_

#include "engine/expert_executor.h"

namespace moeserve::engine {

class Model;

// Runs routed experts in-process from the model's loaded expert weights: tokens are grouped by
// expert so each expert's weights are read once per step (a grouped SwiGLU), then every token's
// outputs are combined in its own top-k order. Borrows the model, which must outlive it.
class LocalExpertExecutor final : public ExpertExecutor {
 public:
  explicit LocalExpertExecutor(const Model* model) : model_(model) {}
  absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                   const float* weights, float* out) override;

 private:
  const Model* model_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_MODEL_LOCAL_EXPERTS_H_
