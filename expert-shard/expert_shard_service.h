#ifndef MOESERVE_EXPERT_SHARD_EXPERT_SHARD_SERVICE_H_
#define MOESERVE_EXPERT_SHARD_EXPERT_SHARD_SERVICE_H_

#include <string>

#include "expert-shard/collective_host.h"
#include "expert-shard/compute_thread.h"
#include "expert-shard/placement.h"
#include "expert-shard/shard_compute.h"
#include "expert-shard/shard_metrics.h"
#include "moeserve/v1/expert_shard.grpc.pb.h"

namespace moeserve::expert_shard {

// The gRPC adapter of a shard: maps ExpertShard messages to ShardBatch/ShardResult, runs the
// compute on the shard's compute thread and converts statuses. Holds no state of its own.
// Borrows everything it is given, which must outlive the grpc::Server it is registered with.
// `collective` may be null: JoinCollective then fails FAILED_PRECONDITION (no NCCL).
class ExpertShardService final : public moeserve::v1::ExpertShard::CallbackService {
 public:
  ExpertShardService(ShardCompute* compute, ComputeThread* thread, const Placement* placement,
                     int32_t shard_id, std::string compute_dtype,
                     ShardMetrics* metrics = nullptr, CollectiveHost* collective = nullptr);

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const moeserve::v1::ShardInfoRequest* request,
                                 moeserve::v1::ShardInfoResponse* response) override;
  grpc::ServerUnaryReactor* Exchange(grpc::CallbackServerContext* context,
                                     const moeserve::v1::ExchangeRequest* request,
                                     moeserve::v1::ExchangeResponse* response) override;
  grpc::ServerUnaryReactor* JoinCollective(grpc::CallbackServerContext* context,
                                           const moeserve::v1::JoinCollectiveRequest* request,
                                           moeserve::v1::JoinCollectiveResponse* response) override;

 private:
  ShardCompute* compute_;
  ComputeThread* thread_;
  const Placement* placement_;
  int32_t shard_id_;
  std::string compute_dtype_;
  ShardMetrics* metrics_;         // may be null
  CollectiveHost* collective_;    // may be null
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_EXPERT_SHARD_SERVICE_H_
