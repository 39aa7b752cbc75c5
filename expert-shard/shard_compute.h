#ifndef MOESERVE_EXPERT_SHARD_SHARD_COMPUTE_H_
#define MOESERVE_EXPERT_SHARD_SHARD_COMPUTE_H_

#include <vector>

#include "absl/status/status.h"
#include "engine/model.h"
#include "engine/model/backend_experts.h"
#include "expert-shard/transport/activation_transport.h"

namespace moeserve::expert_shard {

// The compute side of a shard: runs the routed experts a batch asks for over their rows as
// grouped SwiGLU products (gate and up over all of an expert's rows, silu(g) * u, down), the same
// operations in the same order as the engine's LocalExpertExecutor, so each row's output is bit
// for bit what the whole model computes in-process.
//
// Borrows the model (loaded with the shard's experts; attention weights are not needed), which
// must outlive this object. Not thread-safe: it uses the model's thread pool and scratch space,
// so one Run at a time (the shard server serialises calls on its compute thread).
class ShardCompute {
 public:
  // `on_backend` set (borrowed): the products run there (a GPU shard, --backend), over the
  // experts it uploaded from `model`; over the CPU backend the outputs are the same bit for bit.
  explicit ShardCompute(const engine::Model* model,
                        engine::BackendExpertExecutor* on_backend = nullptr)
      : model_(model), on_backend_(on_backend) {}

  // Fills result->outputs for every row of the batch. Errors:
  //   InvalidArgument    experts/counts of different lengths, negative counts, experts not
  //                      ascending, rows not sum(counts) * hidden_size floats;
  //   FailedPrecondition the layer is not a MoE layer of the model, or an expert is out of range
  //                      or not held by this shard.
  absl::Status Run(const ShardBatch& batch, ShardResult* result);

  // Checks a batch without computing (the same errors as Run).
  absl::Status Validate(const ShardBatch& batch) const;

  const engine::Model& model() const { return *model_; }

 private:
  const engine::Model* model_;
  engine::BackendExpertExecutor* on_backend_;
  std::vector<float> gate_, up_;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_SHARD_COMPUTE_H_
