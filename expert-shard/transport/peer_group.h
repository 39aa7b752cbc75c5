#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_PEER_GROUP_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_PEER_GROUP_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace moeserve::expert_shard {

// One point-to-point operation of a PeerGroup call. `data` is host memory the caller owns for the
// call: a send reads `bytes` from it, a receive writes exactly `bytes` into it.
struct PeerOp {
  enum class Kind { kSend, kRecv };
  Kind kind = Kind::kSend;
  int peer = 0;
  void* data = nullptr;
  int64_t bytes = 0;

  static PeerOp Send(int peer, const void* data, int64_t bytes) {
    return {Kind::kSend, peer, const_cast<void*>(data), bytes};
  }
  static PeerOp Recv(int peer, void* data, int64_t bytes) {
    return {Kind::kRecv, peer, data, bytes};
  }
};

// The ranks of one communicator and the messages between them: the layer under the collective
// expert transport (collective_transport.h). NCCL implements it between GPUs (nccl_peer_group.h);
// an in-process implementation (cpu_peer_group.h) runs the same exchange logic multi-rank in
// tests, since NCCL refuses two ranks on one GPU.
//
// Contract (NCCL's grouped send/recv): Run posts every op of the call together and returns once
// all have completed, so a call may hold sends and receives to and from many peers without
// deadlocking. Messages between two ranks match in posting order, and a receive must name exactly
// the size that was sent. Zero-byte ops are allowed and move nothing (both sides must still post
// them, or neither).
// Errors: Unavailable when a peer does not complete within the timeout or the group is broken;
// Cancelled after Cancel(). After either, the group stays broken and every later call fails the
// same way (a communicator stopped in the middle of a transfer cannot be resynchronised).
// Internal for a receive whose size differs from the matching send (where it can be detected).
// InvalidArgument for a peer outside the group or a negative size (nothing is posted).
// Thread-safety: one Run at a time per group object; Cancel from any thread; different ranks'
// objects are independent.
class PeerGroup {
 public:
  virtual ~PeerGroup() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's timeout, for calls that name none.
  virtual absl::Duration timeout() const = 0;

  absl::Status Run(absl::Span<const PeerOp> ops) { return RunFor(ops, timeout()); }
  // Run with its own timeout; absl::InfiniteDuration() waits until the ops complete, the group
  // fails or Cancel is called (a shard waiting for a worker's next exchange, however idle).
  virtual absl::Status RunFor(absl::Span<const PeerOp> ops, absl::Duration timeout) = 0;
  // Breaks the group: a Run in progress, and every later one, returns Cancelled.
  virtual void Cancel() = 0;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_PEER_GROUP_H_
