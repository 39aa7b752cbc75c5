#ifndef MOESERVE_EXPERT_SHARD_REMOTE_EXPERT_EXECUTOR_H_
#define MOESERVE_EXPERT_SHARD_REMOTE_EXPERT_EXECUTOR_H_

#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "common/clock.h"
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
// Failover: when a shard fails an exchange with Unavailable (dead, unreachable, hung, timed out),
// it is taken out of service and the exchange is redone at once over the remaining copies, so an
// expert placed on two shards survives either one dying or hanging. An expert with no copy left
// fails the call (the transport's error, naming the shard). Once the shard's time out of service
// has passed it is tried again, so service comes back by itself when the shard does. That time
// is `retry_after`, doubled for each further failure in a row up to 8 x `retry_after`, and back
// to `retry_after` after a success: a shard that is hung rather than dead costs the engine
// thread a wait each time it is tried (until the transport notices), so it is tried less often
// the longer it stays hung.
//
// Borrows the placement, transport and clock (nullptr: real time), which must outlive it. Not
// thread-safe (the engine thread calls Run). Errors: InvalidArgument for expert ids out of range;
// Unavailable when an expert has no healthy copy; otherwise the transport's error, which names
// the shard.
class RemoteExpertExecutor final : public engine::ExpertExecutor {
 public:
  RemoteExpertExecutor(const Placement* placement, ActivationTransport* transport,
                       int64_t hidden_size, ReplicaChoice choice = ReplicaChoice::kLowestShard,
                       const Clock* clock = nullptr,
                       absl::Duration retry_after = absl::Seconds(1));

  absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                   const float* weights, float* out) override;

  // Marks a shard as (un)healthy by hand; unhealthy shards are never picked (until marked
  // healthy again), whatever the failover state.
  void SetShardHealthy(int32_t shard, bool healthy);

  // Times a shard was taken out of service after failing an exchange (for logs and tests).
  int64_t failovers() const { return failovers_; }

 private:
  bool Usable(int32_t shard, absl::Time now) const;
  int32_t PickShard(int64_t layer, int32_t expert, int64_t token, absl::Time now) const;
  // One attempt: groups the slots by the shards picked now and exchanges them.
  absl::Status Attempt(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                       absl::Time now, std::vector<ShardBatch>* batches,
                       std::vector<ShardResult>* results,
                       std::vector<std::vector<std::vector<int64_t>>>* slots);

  const Placement* placement_;
  ActivationTransport* transport_;
  int64_t hidden_;
  ReplicaChoice choice_;
  RealClock real_clock_;
  const Clock* clock_;
  absl::Duration retry_after_;
  std::vector<bool> healthy_;          // by hand (SetShardHealthy)
  std::vector<absl::Time> down_until_;  // after a failed exchange
  std::vector<int> strikes_;            // failed exchanges in a row, per shard
  int64_t failovers_ = 0;
  std::vector<float> slot_out_;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_REMOTE_EXPERT_EXECUTOR_H_
