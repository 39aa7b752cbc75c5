#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_GRPC_TRANSPORT_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_GRPC_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/config.h"
#include "expert-shard/placement.h"
#include "expert-shard/transport/activation_transport.h"
#include "moeserve/v1/expert_shard.grpc.pb.h"

namespace moeserve::expert_shard {

struct GrpcTransportOptions {
  std::vector<std::string> addresses;           // shard i at addresses[i] ("host:port")
  int64_t hidden_size = 0;                      // row width of the model's activations
  absl::Duration deadline = absl::Seconds(30);  // per Exchange / Info call
  // How soon a shard that stopped answering (a hung or SIGSTOPped process) fails its calls
  // Unavailable: keepalive pings and the connect timeout (NewLivePeerChannel), so a hang is
  // noticed in about 2 x liveness without cutting short a long exchange with a live shard.
  absl::Duration liveness = absl::Seconds(2);
};

// The CPU data plane: one unary ExpertShard.Exchange call per shard per MoE layer, all shards of
// a layer in flight at once (gRPC's callback client API), then a wait for all of them. Every call
// has a deadline, and the channels ping their shard (`liveness`), so a dead or hung shard fails
// the step within seconds instead of hanging it.
//
// Errors name the shard and its address: FailedPrecondition and InvalidArgument from the shard
// keep their code (the request is wrong for that shard, and retrying it elsewhere would not help);
// every other failure (connection refused, deadline, cancelled, malformed reply) is Unavailable.
// Thread-safety: one Exchange at a time; Info/VerifyShards may be called from any thread.
class GrpcTransport final : public ActivationTransport {
 public:
  // InvalidArgument for an empty address list or hidden_size < 1. Does not connect yet.
  static absl::StatusOr<std::unique_ptr<GrpcTransport>> Create(GrpcTransportOptions options);

  absl::Status Exchange(int64_t layer, absl::Span<const ShardBatch> batches,
                        std::vector<ShardResult>* results) override;
  int num_shards() const override { return static_cast<int>(stubs_.size()); }
  std::string ShardName(int32_t shard) const override;

  // The shard's Info (Unavailable with the address when it cannot be reached).
  absl::StatusOr<moeserve::v1::ShardInfoResponse> Info(int32_t shard);
  // Asks the shard to join a worker's collective group (the control plane of the NCCL data
  // plane). The shard's error, named with its address.
  absl::Status JoinCollective(int32_t shard, const moeserve::v1::JoinCollectiveRequest& request);
  // Asks every shard for its Info and checks that it is serving, has the worker's model shape
  // and holds every expert the placement assigns it. FailedPrecondition naming the shard and the
  // mismatch; Unavailable when a shard cannot be reached.
  absl::Status VerifyShards(const Placement& placement, const engine::ModelConfig& config);

 private:
  explicit GrpcTransport(GrpcTransportOptions options);
  absl::Status FromShard(int32_t shard, absl::Status status) const;

  GrpcTransportOptions options_;
  std::vector<std::unique_ptr<moeserve::v1::ExpertShard::Stub>> stubs_;
  uint64_t step_ = 0;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_GRPC_TRANSPORT_H_
