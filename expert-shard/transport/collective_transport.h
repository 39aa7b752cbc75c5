#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_COLLECTIVE_TRANSPORT_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_COLLECTIVE_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "expert-shard/transport/activation_transport.h"
#include "expert-shard/transport/peer_group.h"

namespace moeserve::expert_shard {

struct CollectiveOptions {
  int64_t hidden_size = 0;       // row width of the model's activations
  int64_t n_routed_experts = 0;  // sizes the fixed header (collective_protocol.h)
  std::string name = "collective";  // for shard names in errors: "nccl rank 2 (shard 1)"
};

// The worker side of the collective data plane: an ActivationTransport over a PeerGroup whose
// rank 0 is this worker and rank 1 + s is shard s, speaking collective_protocol.h. Over an NCCL
// group this is the NCCL transport (counts first, then grouped ncclSend/ncclRecv of rows and
// results); over the in-process group it is how the exchange logic is tested multi-rank.
//
// Errors: InvalidArgument for a malformed batch (nothing is sent); a shard's own error in its
// result (FailedPrecondition / InvalidArgument, named with the shard) with the others' results
// intact; Unavailable naming the group when the group fails, for every batch of the exchange
// (a communicator cannot lose one rank and go on, so every later exchange fails too).
// Owns the group. Thread-safety: one Exchange at a time (the worker's engine thread).
// The destructor tells every shard to stop serving (best effort).
class CollectiveTransport final : public ActivationTransport {
 public:
  // InvalidArgument when the group is not rank 0 of at least 2 ranks or a size is below 1.
  static absl::StatusOr<std::unique_ptr<CollectiveTransport>> Create(
      std::unique_ptr<PeerGroup> group, CollectiveOptions options);
  ~CollectiveTransport() override;

  absl::Status Exchange(int64_t layer, absl::Span<const ShardBatch> batches,
                        std::vector<ShardResult>* results) override;
  int num_shards() const override { return group_->size() - 1; }
  std::string ShardName(int32_t shard) const override;

  // Ends every shard's serving loop; later exchanges fail. Idempotent.
  absl::Status Stop();

 private:
  CollectiveTransport(std::unique_ptr<PeerGroup> group, CollectiveOptions options)
      : group_(std::move(group)), options_(std::move(options)) {}

  std::unique_ptr<PeerGroup> group_;
  CollectiveOptions options_;
  uint64_t step_ = 0;
  bool stopped_ = false;
};

// Runs one batch on the shard (its ShardCompute, on the shard's compute thread).
using ShardRunner = std::function<absl::Status(const ShardBatch&, ShardResult*)>;

// The shard side: serves the exchanges of the CollectiveTransport at rank 0 of `group` until it
// sends stop (returns OK), the group is cancelled (Cancelled) or fails (Unavailable, or Internal
// for a corrupt header). It waits for each exchange's header without a timeout (a worker may be
// idle for long), and for the rest of an exchange within the group's timeout. A batch the runner
// rejects is answered with its error and serving goes on. Borrows the group; blocks the thread.
absl::Status ServeCollective(PeerGroup* group, int64_t n_routed_experts,
                             const ShardRunner& run);

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_COLLECTIVE_TRANSPORT_H_
