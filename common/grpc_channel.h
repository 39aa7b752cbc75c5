#ifndef MOESERVE_COMMON_GRPC_CHANNEL_H_
#define MOESERVE_COMMON_GRPC_CHANNEL_H_

#include <memory>
#include <string>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace moeserve {

// The reconnect backoff of every channel from one moeserve service to another. gRPC's default
// grows from 1 s by 1.6x per failed attempt up to 120 s, so a peer that was down for a minute
// (a restarted shard, KV-cache service or router) could sit unused for up to two more minutes
// after it is back. Capped at 1 s, a client tries a dead loopback/cluster peer about once a
// second, which costs nothing, and uses it again within about a second of its return.
inline constexpr int kPeerMaxReconnectBackoffMs = 1000;

// A server closes each client connection after this long (GOAWAY: calls in flight finish, new
// ones go over a new connection), so a client of a replicated service resolves its name again
// and spreads over replicas added since (see NewPeerChannel).
inline constexpr int kServerMaxConnectionAgeMs = 60 * 1000;

// An insecure channel to another moeserve service with that backoff; `unlimited_messages`
// lifts gRPC's 4 MiB receive/send limits (activations and KV blocks exceed them).
// Round robin over every address the target resolves to: a name of several replicas (the router
// behind a headless Kubernetes Service) gets calls spread over all of them, where gRPC's default
// (pick_first) would send everything to one.
inline std::shared_ptr<grpc::Channel> NewPeerChannel(const std::string& target,
                                                     bool unlimited_messages = false) {
  grpc::ChannelArguments args;
  if (unlimited_messages) {
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
  }
  // Only the cap: gRPC's minimum backoff doubles as its connect timeout (20 s), and lowering it
  // would fail handshakes with a busy peer (a silent one then fails before the call's deadline).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kPeerMaxReconnectBackoffMs);
  args.SetLoadBalancingPolicyName("round_robin");
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace moeserve

#endif  // MOESERVE_COMMON_GRPC_CHANNEL_H_
