#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_CPU_PEER_GROUP_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_CPU_PEER_GROUP_H_

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "expert-shard/transport/peer_group.h"

namespace moeserve::expert_shard {

// `size` PeerGroup ranks of one in-process communicator, for running the collective exchange
// multi-rank without GPUs (each rank on its own thread). Sends copy the bytes into the receiver's
// queue for that sender and never block; receives wait for their message in posting order, at most
// `timeout` each (then Unavailable, and the rank's group is broken). A size mismatch is Internal.
// The returned objects share one mailbox set; each may be used from its own thread.
std::vector<std::unique_ptr<PeerGroup>> MakeCpuPeerGroups(int size,
                                                          absl::Duration timeout = absl::Seconds(30));

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_CPU_PEER_GROUP_H_
