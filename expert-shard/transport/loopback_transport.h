#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_LOOPBACK_TRANSPORT_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_LOOPBACK_TRANSPORT_H_

#include <cstdint>
#include <vector>

#include "expert-shard/shard_compute.h"
#include "expert-shard/transport/activation_transport.h"

namespace moeserve::expert_shard {

// An in-process transport for tests: shard i is `shards[i]`, called directly on the caller's
// thread. Borrows the ShardComputes, which must outlive it. Counts the batches each shard got,
// so tests can check that a worker sends one exchange per shard per MoE layer.
// A null entry is a dead shard (Unavailable). Not thread-safe (one Exchange at a time).
class LoopbackTransport final : public ActivationTransport {
 public:
  explicit LoopbackTransport(std::vector<ShardCompute*> shards);

  absl::Status Exchange(int64_t layer, absl::Span<const ShardBatch> batches,
                        std::vector<ShardResult>* results) override;
  int num_shards() const override { return static_cast<int>(shards_.size()); }
  std::string ShardName(int32_t shard) const override;

  // Replaces shard `shard` (nullptr: it goes down; a compute: it is back).
  void SetShard(int32_t shard, ShardCompute* compute);

  // Batches delivered to `shard` so far.
  int64_t batches_sent(int32_t shard) const { return batches_sent_[shard]; }
  int64_t exchanges() const { return exchanges_; }

 private:
  std::vector<ShardCompute*> shards_;
  std::vector<int64_t> batches_sent_;
  int64_t exchanges_ = 0;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_LOOPBACK_TRANSPORT_H_
