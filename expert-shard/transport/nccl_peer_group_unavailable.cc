// The NCCL PeerGroup in a build without the CUDA toolkit (see nccl_peer_group.h).
#include "expert-shard/transport/nccl_peer_group.h"

namespace moeserve::expert_shard {
namespace {

absl::Status NotBuilt() {
  return absl::FailedPreconditionError(
      "this build has no NCCL (configure with the CUDA toolkit present to get the NCCL transport)");
}

}  // namespace

bool NcclBuilt() { return false; }

int CudaDeviceCount() { return 0; }

absl::StatusOr<std::string> NewNcclUniqueId() { return NotBuilt(); }

absl::StatusOr<std::unique_ptr<PeerGroup>> CreateNcclPeerGroup(const NcclGroupOptions&) {
  return NotBuilt();
}

}  // namespace moeserve::expert_shard
