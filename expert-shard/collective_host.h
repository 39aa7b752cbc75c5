#ifndef MOESERVE_EXPERT_SHARD_COLLECTIVE_HOST_H_
#define MOESERVE_EXPERT_SHARD_COLLECTIVE_HOST_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "expert-shard/compute_thread.h"
#include "expert-shard/shard_compute.h"
#include "expert-shard/shard_metrics.h"
#include "expert-shard/transport/peer_group.h"

namespace moeserve::expert_shard {

// What a worker's JoinCollective call asks of a shard.
struct CollectiveJoin {
  std::string unique_id;  // the communicator id the worker made
  int rank = 0;
  int size = 0;
  absl::Duration timeout = absl::Seconds(30);
};

// Joins the group as one rank (in production CreateNcclPeerGroup on the shard's GPU; tests pass
// in-process groups). Blocks until every rank has joined or it fails.
using GroupJoiner =
    std::function<absl::StatusOr<std::unique_ptr<PeerGroup>>(const CollectiveJoin&)>;

// Joins as an NCCL rank on GPU `device` (CreateNcclPeerGroup).
GroupJoiner NcclGroupJoiner(int device);

// A shard's end of workers' collective data planes: on Join it joins the group on a thread of its
// own and serves that worker's exchanges (ServeCollective), running each batch on the shard's
// compute thread, in turn with gRPC Exchange calls and with other workers' groups. A group ends
// when its worker stops it, a transfer fails, or the host is destroyed (which cancels every group
// and joins their threads). A worker that dies without stopping its group may leave it waiting
// (a peer's death is not always visible to NCCL); such groups count against kMaxGroups until
// the shard restarts.
// Borrows the compute, thread and metrics (may be null), which must outlive it. Thread-safe.
class CollectiveHost {
 public:
  static constexpr int kMaxGroups = 16;

  CollectiveHost(ShardCompute* compute, ComputeThread* thread, int32_t shard_id, int num_shards,
                 GroupJoiner join, std::string transport_name, ShardMetrics* metrics = nullptr);
  ~CollectiveHost();
  CollectiveHost(const CollectiveHost&) = delete;
  CollectiveHost& operator=(const CollectiveHost&) = delete;

  // Starts joining and serving; returns at once. InvalidArgument when the rank or size does not
  // fit this shard (shard s is rank s + 1 of num_shards + 1) or the id is empty;
  // FailedPrecondition for a group this shard already joined, or while shutting down;
  // ResourceExhausted with kMaxGroups groups active.
  absl::Status Join(const CollectiveJoin& join);

  // Groups being joined or served now.
  int active_groups() const;
  // How the most recently ended group ended (OK when none has ended yet).
  absl::Status last_status() const;

 private:
  struct Session {
    std::string id;
    std::thread thread;
    PeerGroup* group = nullptr;  // while served, for Cancel
    bool done = false;
  };
  void Serve(Session* session, const CollectiveJoin& join);

  ShardCompute* compute_;
  ComputeThread* thread_;
  const int32_t shard_id_;
  const int num_shards_;
  GroupJoiner join_;
  const std::string transport_name_;
  ShardMetrics* metrics_;

  mutable absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  absl::Status last_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_COLLECTIVE_HOST_H_
