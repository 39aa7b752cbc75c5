#ifndef MOESERVE_EXPERT_SHARD_COLLECTIVE_CONNECT_H_
#define MOESERVE_EXPERT_SHARD_COLLECTIVE_CONNECT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/config.h"
#include "expert-shard/collective_host.h"
#include "expert-shard/transport/collective_transport.h"
#include "expert-shard/transport/grpc_transport.h"

namespace moeserve::expert_shard {

// The worker's side of setting up the collective data plane through the gRPC control plane: asks
// every shard (in shard order) to join the group named by `unique_id` as rank shard + 1, joins it
// as rank 0 with `join_self` (which blocks until every rank is in), and returns the transport
// over it. The shards must already have passed VerifyShards. Borrows `control`.
// Errors: a shard's refusal (FailedPrecondition: no NCCL there, or it serves another worker's
// group; InvalidArgument), named with its address; join_self's error (Unavailable when some
// rank never joined within `timeout`).
absl::StatusOr<std::unique_ptr<CollectiveTransport>> ConnectCollective(
    GrpcTransport* control, const engine::ModelConfig& config, const std::string& unique_id,
    const GroupJoiner& join_self, absl::Duration timeout, const std::string& name);

// ConnectCollective over NCCL: a fresh communicator id, this worker's rank on GPU `device`.
// FailedPrecondition in a build without NCCL.
absl::StatusOr<std::unique_ptr<CollectiveTransport>> ConnectNcclTransport(
    GrpcTransport* control, const engine::ModelConfig& config, int device,
    absl::Duration timeout = absl::Seconds(30));

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_COLLECTIVE_CONNECT_H_
