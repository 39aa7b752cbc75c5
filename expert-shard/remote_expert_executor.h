#ifndef MOESERVE_EXPERT_SHARD_REMOTE_EXPERT_EXECUTOR_H_
#define MOESERVE_EXPERT_SHARD_REMOTE_EXPERT_EXECUTOR_H_

#include <cstdint>
#include <vector>

#include "engine/expert_executor.h"
#include "expert-shard/placement.h"
#include "expert-shard/transport/activation_transport.h"

namespace moeserve::expert_shard {

// How a worker picks among the shards holding a copy of an expert. Both are deterministic, and
// since an expert's output for a row does not depend on the other rows it is computed with, both
// give the same results; they differ only in load.
enum class ReplicaChoice {
  kLowestShard,    // the lowest healthy shard id
  kSpreadByToken,  // healthy copies in turn by token index (token t takes copy t % copies)
};

// The worker side of attention/expert disaggregation: implements engine::ExpertExecutor by
// grouping the batch's (token, slot) pairs by owning shard (per the placement), sending ONE
// batch per shard for the whole batch through the transport, and combining the returned raw
// expert outputs as out[i] = sum over j in slot order of weights[i, j] * output(i, j), the same
// float operations in the same order as the engine's LocalExpertExecutor.
//
// Borrows the placement and transport, which must outlive it. Not thread-safe (the engine thread
// calls Run). Errors: InvalidArgument for expert ids out of range; Unavailable when an expert
// has no healthy copy; otherwise the transport's error, which names the shard.
class RemoteExpertExecutor final : public engine::ExpertExecutor {
 public:
  RemoteExpertExecutor(const Placement* placement, ActivationTransport* transport,
                       int64_t hidden_size, ReplicaChoice choice = ReplicaChoice::kLowestShard);

  absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                   const float* weights, float* out) override;

  // Marks a shard as (un)healthy; unhealthy shards are skipped when an expert has other copies.
  void SetShardHealthy(int32_t shard, bool healthy);

 private:
  int32_t PickShard(int64_t layer, int32_t expert, int64_t token) const;

  const Placement* placement_;
  ActivationTransport* transport_;
  int64_t hidden_;
  ReplicaChoice choice_;
  std::vector<bool> healthy_;
  std::vector<float> slot_out_;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_REMOTE_EXPERT_EXECUTOR_H_
