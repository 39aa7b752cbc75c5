#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_NCCL_PEER_GROUP_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_NCCL_PEER_GROUP_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "expert-shard/transport/peer_group.h"

// The NCCL PeerGroup: one rank of an NCCL communicator on one GPU. With it, CollectiveTransport
// is the NCCL activation transport (DESIGN.md: worker and shards in one communicator, counts
// first, then grouped ncclSend/ncclRecv). Built only where the CUDA toolkit with NCCL was found;
// elsewhere every function returns FailedPrecondition (nccl_peer_group_unavailable.cc), so no
// caller needs an #if.
namespace moeserve::expert_shard {

struct NcclGroupOptions {
  std::string unique_id;  // NewNcclUniqueId()'s bytes, the same on every rank
  int rank = 0;
  int size = 0;
  int device = 0;  // the CUDA device of this rank (one rank per GPU: NCCL refuses two)
  // Communicator setup, and each Run, fail Unavailable (and abort the communicator) after this.
  absl::Duration timeout = absl::Seconds(30);
};

// Whether this build can make NCCL groups at all (a device is still needed at run time).
bool NcclBuilt();

// CUDA devices visible to this process (0 without the build, a driver or a GPU).
int CudaDeviceCount();

// A new communicator id: rank 0 makes it and hands it to the other ranks over the gRPC control
// plane. FailedPrecondition without NCCL; Unavailable when NCCL fails (no device, no network).
absl::StatusOr<std::string> NewNcclUniqueId();

// Joins the communicator; blocks until every rank has joined or the timeout passes.
// Run stages host data through pinned and device buffers on one stream of its own and waits on
// that stream by polling, so a peer that never answers fails the call at the timeout instead of
// hanging the thread. NCCL cannot tell a receive of the wrong size from a slow peer: sizes must
// agree (collective_protocol.h derives both sides' sizes from the header).
// Errors: InvalidArgument for a bad rank, size or id; Unavailable for CUDA/NCCL failures.
absl::StatusOr<std::unique_ptr<PeerGroup>> CreateNcclPeerGroup(const NcclGroupOptions& options);

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_NCCL_PEER_GROUP_H_
