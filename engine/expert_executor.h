#ifndef MOESERVE_ENGINE_EXPERT_EXECUTOR_H_
#define MOESERVE_ENGINE_EXPERT_EXECUTOR_H_

#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::engine {

class Backend;

// Computes the routed experts of one MoE layer for a batch of tokens. The model calls it once per
// MoE layer per forward step with the gate's choice already made; the local implementation runs
// the experts in-process, and the expert-shard client (a later component) sends the tokens to
// the shards that own them. Implementations must make out[i] depend only on row i's inputs (not
// on the rest of the batch), so batched and single-sequence results agree exactly.
class ExpertExecutor {
 public:
  virtual ~ExpertExecutor() = default;

  // x: [n, hidden] float32 (the post-attention-normed hidden states).
  // ids, weights: [n, k] chosen expert ids and their combine weights.
  // out: [n, hidden], overwritten with sum_j weights[i,j] * Expert_{ids[i,j]}(x[i]), summed in
  // j order. Returns Unavailable/Internal when a remote shard fails; FailedPrecondition when an
  // expert's weights are not held.
  virtual absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k,
                           const int32_t* ids, const float* weights, float* out) = 0;

  // Executors whose experts live on a Backend may take the routing where the model on that
  // backend leaves it: RunOnBackend has Run's contract with x, ids, weights and out in the
  // backend's memory, and no host round trip. BackendModel asks RunsOnBackend first.
  virtual bool RunsOnBackend(const Backend* /*backend*/, int64_t /*layer*/) const { return false; }
  virtual absl::Status RunOnBackend(int64_t /*layer*/, const float* /*x*/, int64_t /*n*/,
                                    int64_t /*k*/, const int32_t* /*ids*/,
                                    const float* /*weights*/, float* /*out*/) {
    return absl::UnimplementedError("this expert executor runs on the host");
  }
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_EXPERT_EXECUTOR_H_
