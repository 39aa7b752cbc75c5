#ifndef MOESERVE_GATEWAY_ROUTER_BACKEND_H_
#define MOESERVE_GATEWAY_ROUTER_BACKEND_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gateway/generation_backend.h"
#include "grpcpp/channel.h"
#include "moeserve/v1/router.grpc.pb.h"

namespace moeserve::gateway {

// GenerationBackend over the Router service: one Router.Generate server stream per request,
// read with gRPC's callback API (no thread per stream). Each call has a deadline of `timeout`;
// Cancel() is ClientContext::TryCancel. Errors from the router reach on_done as their status
// code (UNAVAILABLE when the router is down, DEADLINE_EXCEEDED on the deadline). Thread-safe.
class RouterBackend final : public GenerationBackend {
 public:
  RouterBackend(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout);
  // A channel to `address` (host:port, insecure).
  static std::unique_ptr<RouterBackend> Connect(const std::string& address, absl::Duration timeout);
  // Cancels the calls still running and waits until each has finished delivering on_done.
  ~RouterBackend() override;

  GenerationCallPtr Start(GenerationRequest request, GenerationCallbacks callbacks) override;

 private:
  std::unique_ptr<v1::Router::Stub> stub_;
  absl::Duration timeout_;

 public:
  struct Outstanding;  // the calls not yet destroyed (router_backend.cc)

 private:
  std::shared_ptr<Outstanding> outstanding_;
};

// The proto form of a request (shared with tests).
v1::GenerationSpec ToGenerationSpec(const GenerationRequest& request);
FinishReason FromProtoFinishReason(v1::FinishReason reason);
std::vector<engine::SampleResult> FromProtoLogprobs(
    const google::protobuf::RepeatedPtrField<v1::TokenLogprob>& logprobs);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_ROUTER_BACKEND_H_
