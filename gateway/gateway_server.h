#ifndef MOESERVE_GATEWAY_GATEWAY_SERVER_H_
#define MOESERVE_GATEWAY_GATEWAY_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "gateway/api_keys.h"
#include "gateway/batch_manager.h"
#include "common/redis_client.h"
#include "gateway/call_registry.h"
#include "gateway/gateway_metrics.h"
#include "gateway/generation_backend.h"
#include "gateway/http_server.h"
#include "gateway/inference_service.h"
#include "gateway/model_context.h"
#include "gateway/price_table.h"
#include "gateway/stream_registry.h"
#include "grpcpp/server.h"

namespace moeserve::gateway {

struct GatewayConfig {
  std::string model_dir;   // tokenizer.json, tokenizer_config.json, config.json (no weights)
  std::string model_name;  // empty: the model folder's basename
  std::string host = "0.0.0.0";
  int http_port = 0;  // 0: any free port
  int grpc_port = 0;
  int metrics_port = -1;  // Prometheus /metrics: -1 off, 0 any free port
  int http_threads = 2;
  std::string router_address;  // host:port of the Router (unused when a backend is injected)
  absl::Duration router_timeout = absl::Minutes(30);
  int32_t max_tokens_default = 4096;
  // DeepSeek's rule for its reasoner: chat requests to a model whose template opens <think>
  // get 400 when they ask for logprobs. Off by default (logprobs are served for every model).
  bool reject_reasoner_logprobs = false;
  std::string price_table_file;  // empty: PriceTable::Default()
  std::string api_keys_file;     // empty: no API keys (no authentication, no quotas)
  // SSE comment interval while a stream has no token yet; zero: none.
  absl::Duration sse_keepalive = absl::Seconds(10);
  // Resumable streams (--stream-resume-grace-s, ...); grace zero: a disconnect cancels at once.
  StreamResumeOptions stream_resume;
  // The Batch API's store: Redis at this address (durable); none: process memory (lost on exit).
  std::optional<RedisEndpoint> redis;
  BatchOptions batch;  // --batch-concurrency, --batch-priority, --batch-max-file-mb, ...
  // Not owned; null: a RouterBackend to router_address. Tests inject a fake.
  GenerationBackend* backend = nullptr;
};

// The gateway process: the OpenAI-compatible HTTP server and the gRPC Inference service (plus
// the standard health service and reflection) over one GenerationBackend.
// Create() returns once both listen. StartDrain() then Idle() drain it (SIGTERM); Shutdown()
// stops both, cancels the generations in flight
// and waits for them; idempotent, and the destructor calls it.
class GatewayServer {
 public:
  // INVALID_ARGUMENT for a bad config, NOT_FOUND / INVALID_ARGUMENT for a bad model folder,
  // UNAVAILABLE when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Create(GatewayConfig config);
  ~GatewayServer();
  GatewayServer(const GatewayServer&) = delete;
  GatewayServer& operator=(const GatewayServer&) = delete;

  int HttpPort() const { return http_->Port(); }
  int GrpcPort() const { return grpc_port_; }
  int MetricsPort() const { return metrics_endpoint_ ? metrics_endpoint_->Port() : 0; }
  GatewayMetrics& metrics() { return *metrics_; }
  const ModelContext& model() const { return *model_; }
  const PriceTable& prices() const { return *prices_; }
  BatchManager& batches() { return *batches_; }
  // Graceful drain: health NOT_SERVING, /readyz 503, new requests UNAVAILABLE / 503; the
  // requests in flight go on. Idle() is true once every accepted response is complete.
  void StartDrain();
  bool Idle() const;
  void Shutdown();

 private:
  GatewayServer() = default;

  std::unique_ptr<ModelContext> model_;
  std::unique_ptr<PriceTable> prices_;
  RealClock clock_;
  std::unique_ptr<ApiKeyStore> keys_;  // null without --api-keys
  std::unique_ptr<GatewayMetrics> metrics_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<GenerationBackend> owned_backend_;
  GenerationBackend* backend_ = nullptr;
  CallRegistry calls_;
  std::unique_ptr<StreamRegistry> streams_;
  std::unique_ptr<BatchManager> batches_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::unique_ptr<HttpServer> http_;
  int grpc_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_GATEWAY_SERVER_H_
