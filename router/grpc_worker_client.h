#ifndef MOESERVE_ROUTER_GRPC_WORKER_CLIENT_H_
#define MOESERVE_ROUTER_GRPC_WORKER_CLIENT_H_

#include <memory>
#include <string>

#include "grpcpp/channel.h"
#include "moeserve/v1/worker.grpc.pb.h"
#include "router/worker_client.h"

namespace moeserve::router {

// WorkerClient over the Worker gRPC service (blocking stubs, one shared channel per worker).
class GrpcWorkerClient final : public WorkerClient {
 public:
  explicit GrpcWorkerClient(std::shared_ptr<grpc::Channel> channel);
  // An insecure channel to host:port.
  static WorkerClientPtr Connect(const std::string& address);

  absl::StatusOr<v1::PrefillResponse> Prefill(const v1::PrefillRequest& request,
                                              const CallOptions& options) override;
  absl::Status Decode(const v1::DecodeRequest& request, const CallOptions& options,
                      const std::function<bool(const v1::DecodeChunk&)>& on_chunk) override;
  absl::StatusOr<v1::WorkerLoad> GetLoad(const CallOptions& options) override;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Worker::Stub> stub_;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_GRPC_WORKER_CLIENT_H_
