#ifndef MOESERVE_ENGINE_MODEL_LOCAL_EXPERTS_H_
#define MOESERVE_ENGINE_MODEL_LOCAL_EXPERTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/expert_executor.h"

namespace moeserve::engine {

class Model;

// Groups a batch's (token, slot) pairs by expert: rows [start[e], start[e + 1]) of the gathered
// activations are expert e's, in slot order, and row_of_slot[i] is slot i's row.
// InvalidArgument for an expert id outside [0, n_experts).
absl::Status GroupSlotsByExpert(const int32_t* ids, int64_t slots, int64_t n_experts,
                                std::vector<int64_t>* start, std::vector<int64_t>* row_of_slot);

// out[t] = sum over j in slot order of weights[t, j] * ys[row_of_slot[t * k + j]], for tokens
// [t0, t1): each token's experts combined in its own top-k order, so the sum does not depend on
// how the batch was grouped.
void CombineSlots(const float* ys, const int64_t* row_of_slot, const float* weights, int64_t k,
                  int64_t hidden, int64_t t0, int64_t t1, float* out);

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
