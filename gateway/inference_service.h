#ifndef MOESERVE_GATEWAY_INFERENCE_SERVICE_H_
#define MOESERVE_GATEWAY_INFERENCE_SERVICE_H_

#include "absl/status/statusor.h"
#include "gateway/api_keys.h"
#include "gateway/call_registry.h"
#include "gateway/gateway_metrics.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "gateway/request_mapping.h"
#include "moeserve/v1/inference.grpc.pb.h"

namespace moeserve::gateway {

// The gRPC Inference service (callback API): the same request mapping and output assembly as
// the HTTP API. Generate streams InferenceResponse messages with reasoning and answer apart;
// the last one carries finish_reason and usage. Text produced while a write is in flight is
// merged into the next message, so a slow reader costs one message of memory. OnCancel (client
// gone or deadline) cancels the backend call. Errors: INVALID_ARGUMENT / NOT_FOUND from
// validation, else the backend's status.
//
// `model`, `backend`, `calls` and `metrics` are not owned and must outlive the service and its calls.
class InferenceService final : public v1::Inference::CallbackService {
 public:
  // `keys` (null: no API keys) is not owned either. With keys, Generate needs metadata
  // `authorization: Bearer KEY` (else UNAUTHENTICATED) and is subject to the key's quotas
  // (RESOURCE_EXHAUSTED); ListModels needs a key too.
  InferenceService(const ModelContext* model, GenerationBackend* backend, CallRegistry* calls,
                   GatewayMetrics* metrics, ApiKeyStore* keys = nullptr)
      : model_(model), backend_(backend), calls_(calls), metrics_(metrics), keys_(keys) {}

  grpc::ServerWriteReactor<v1::InferenceResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::InferenceRequest* request) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;

 private:
  const ModelContext* const model_;
  GenerationBackend* const backend_;
  CallRegistry* const calls_;
  GatewayMetrics* const metrics_;
  ApiKeyStore* const keys_;
};

// The InferenceRequest as an ApiRequest, validated like the HTTP API's (pure; for tests too).
// Proto defaults: temperature 0 is greedy, top_p 0 and repetition_penalty 0 mean "off".
absl::StatusOr<ApiRequest> FromInferenceRequest(const v1::InferenceRequest& request);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_INFERENCE_SERVICE_H_
