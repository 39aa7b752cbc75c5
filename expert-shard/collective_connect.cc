#include "expert-shard/collective_connect.h"

#include <utility>

#include "common/status_macros.h"
#include "expert-shard/transport/nccl_peer_group.h"

namespace moeserve::expert_shard {

absl::StatusOr<std::unique_ptr<CollectiveTransport>> ConnectCollective(
    GrpcTransport* control, const engine::ModelConfig& config, const std::string& unique_id,
    const GroupJoiner& join_self, absl::Duration timeout, const std::string& name) {
  const int shards = control->num_shards();
  moeserve::v1::JoinCollectiveRequest request;
  request.set_nccl_unique_id(unique_id);
  request.set_world_size(shards + 1);
  request.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  for (int32_t s = 0; s < shards; ++s) {
    request.set_rank(s + 1);
    MOESERVE_RETURN_IF_ERROR(control->JoinCollective(s, request));
  }
  CollectiveJoin self;
  self.unique_id = unique_id;
  self.rank = 0;
  self.size = shards + 1;
  self.timeout = timeout;
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<PeerGroup> group, join_self(self));
  CollectiveOptions options;
  options.hidden_size = config.hidden_size;
  options.n_routed_experts = config.n_routed_experts;
  options.name = name;
  return CollectiveTransport::Create(std::move(group), std::move(options));
}

absl::StatusOr<std::unique_ptr<CollectiveTransport>> ConnectNcclTransport(
    GrpcTransport* control, const engine::ModelConfig& config, int device,
    absl::Duration timeout) {
  MOESERVE_ASSIGN_OR_RETURN(std::string id, NewNcclUniqueId());
  return ConnectCollective(control, config, id, NcclGroupJoiner(device), timeout, "nccl");
}

}  // namespace moeserve::expert_shard
