#include "router/grpc_worker_client.h"

#include <utility>

#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "common/grpc_channel.h"

namespace moeserve::router {
namespace {

// Applies the deadline and hooks the token to TryCancel for the lifetime of one call.
class ScopedCall {
 public:
  ScopedCall(grpc::ClientContext* context, const CallOptions& options) : token_(options.cancel) {
    if (options.deadline != absl::InfiniteFuture()) {
      context->set_deadline(absl::ToChronoTime(options.deadline));
    }
    if (token_ != nullptr) token_->SetCallback([context] { context->TryCancel(); });
  }
  ~ScopedCall() {
    if (token_ != nullptr) token_->SetCallback(nullptr);
  }
  ScopedCall(const ScopedCall&) = delete;
  ScopedCall& operator=(const ScopedCall&) = delete;

 private:
  CancelToken* token_;
};

}  // namespace

GrpcWorkerClient::GrpcWorkerClient(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)), stub_(v1::Worker::NewStub(channel_)) {}

WorkerClientPtr GrpcWorkerClient::Connect(const std::string& address) {
  // A scored prompt's PrefillResponse (prompt_logprobs, up to ~160 bytes a token with 20
  // alternatives) passes gRPC's 4 MiB default from about 26k tokens.
  return std::make_shared<GrpcWorkerClient>(NewPeerChannel(address, /*unlimited_messages=*/true));
}

absl::StatusOr<v1::PrefillResponse> GrpcWorkerClient::Prefill(const v1::PrefillRequest& request,
                                                              const CallOptions& options) {
  grpc::ClientContext context;
  ScopedCall call(&context, options);
  v1::PrefillResponse response;
  grpc::Status status = stub_->Prefill(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::Status GrpcWorkerClient::Decode(const v1::DecodeRequest& request, const CallOptions& options,
                                      const std::function<bool(const v1::DecodeChunk&)>& on_chunk) {
  grpc::ClientContext context;
  ScopedCall call(&context, options);
  std::unique_ptr<grpc::ClientReader<v1::DecodeChunk>> reader = stub_->Decode(&context, request);
  v1::DecodeChunk chunk;
  bool wanted = true;
  while (reader->Read(&chunk)) {
    if (wanted && !on_chunk(chunk)) {
      wanted = false;
      context.TryCancel();  // keep reading until the stream closes, as Finish requires
    }
  }
  return FromGrpcStatus(reader->Finish());
}

absl::StatusOr<v1::WorkerLoad> GrpcWorkerClient::GetLoad(const CallOptions& options) {
  grpc::ClientContext context;
  ScopedCall call(&context, options);
  v1::WorkerLoad load;
  grpc::Status status = stub_->GetLoad(&context, v1::GetLoadRequest(), &load);
  if (!status.ok()) return FromGrpcStatus(status);
  return load;
}

}  // namespace moeserve::router
