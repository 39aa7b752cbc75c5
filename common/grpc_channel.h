#ifndef MOESERVE_COMMON_GRPC_CHANNEL_H_
#define MOESERVE_COMMON_GRPC_CHANNEL_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/server_builder.h"
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
inline grpc::ChannelArguments PeerChannelArguments(bool unlimited_messages) {
  grpc::ChannelArguments args;
  if (unlimited_messages) {
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
  }
  // Only the cap: gRPC's minimum backoff doubles as its connect timeout (20 s), and lowering it
  // would fail handshakes with a busy peer (a silent one then fails before the call's deadline).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kPeerMaxReconnectBackoffMs);
  args.SetLoadBalancingPolicyName("round_robin");
  return args;
}

inline std::shared_ptr<grpc::Channel> NewPeerChannel(const std::string& target,
                                                     bool unlimited_messages = false) {
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   PeerChannelArguments(unlimited_messages));
}

// NewPeerChannel for a peer whose calls hold something up while they are in flight (an expert
// shard: the worker's engine thread waits on every exchange), so a peer that stops answering
// must be noticed well before a call's deadline, which has to allow for long legitimate work.
// HTTP/2 keepalive pings go out every `liveness`, and a connection whose ping is not answered
// within `liveness` is dropped, failing its calls UNAVAILABLE at once; a new connection whose
// HTTP/2 handshake takes longer than `liveness` fails the same way (gRPC's connect timeout is
// otherwise 20 s). Pings are answered by the peer's gRPC transport threads, not by the
// application, so a peer busy computing answers them; a stopped process (SIGSTOP, a hung host)
// does not. The peer's server must accept the pings (AcceptPeerKeepalive), or it answers them
// with GOAWAY "too_many_pings".
inline std::shared_ptr<grpc::Channel> NewLivePeerChannel(const std::string& target,
                                                         bool unlimited_messages,
                                                         absl::Duration liveness) {
  grpc::ChannelArguments args = PeerChannelArguments(unlimited_messages);
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(liveness));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, ms);  // the connect (handshake) timeout
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Keep pinging while no data flows (a stopped peer sends none); by default gRPC stops after 2.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, ms);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// The server side of NewLivePeerChannel: accepts keepalive pings however often they come (with
// or without calls in flight) instead of answering them with GOAWAY "too_many_pings".
inline void AcceptPeerKeepalive(grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 100);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);  // 0: never GOAWAY for pings
}

}  // namespace moeserve

#endif  // MOESERVE_COMMON_GRPC_CHANNEL_H_
