#include "gateway/gateway_server.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "gateway/router_backend.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace moeserve::gateway {

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Create(GatewayConfig config) {
  if (config.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (config.http_port < 0 || config.http_port > 65535 || config.grpc_port < 0 ||
      config.grpc_port > 65535) {
    return absl::InvalidArgumentError("ports must be in [0, 65535]");
  }
  if (config.max_tokens_default < 1) {
    return absl::InvalidArgumentError("--max-tokens-default must be >= 1");
  }
  if (config.backend == nullptr && config.router_address.empty()) {
    return absl::InvalidArgumentError("--router host:port is required");
  }
  std::unique_ptr<GatewayServer> server(new GatewayServer());
  std::string name = config.model_name;
  if (name.empty()) {
    std::filesystem::path dir(config.model_dir);
    name = (dir.has_filename() ? dir.filename() : dir.parent_path().filename()).string();
  }
  absl::StatusOr<std::unique_ptr<ModelContext>> model =
      ModelContext::Load(config.model_dir, name, config.max_tokens_default);
  if (!model.ok()) return model.status();
  server->model_ = std::move(*model);
  if (config.price_table_file.empty()) {
    server->prices_ = std::make_unique<PriceTable>(PriceTable::Default());
  } else {
    absl::StatusOr<PriceTable> prices = PriceTable::LoadFile(config.price_table_file);
    if (!prices.ok()) return prices.status();
    server->prices_ = std::make_unique<PriceTable>(*std::move(prices));
  }
  if (!config.api_keys_file.empty()) {
    absl::StatusOr<std::unique_ptr<ApiKeyStore>> keys =
        ApiKeyStore::LoadFile(config.api_keys_file, &server->clock_);
    if (!keys.ok()) return keys.status();
    server->keys_ = *std::move(keys);
  }
  if (config.sse_keepalive < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--sse-keepalive-s must be >= 0");
  }
  if (config.stream_resume.grace < absl::ZeroDuration() ||
      config.stream_resume.max_stream_bytes == 0) {
    return absl::InvalidArgumentError(
        "--stream-resume-grace-s must be >= 0 and --stream-resume-max-bytes > 0");
  }
  server->streams_ = std::make_unique<StreamRegistry>(config.stream_resume, &server->clock_);
  server->metrics_ = std::make_unique<GatewayMetrics>(server->prices_.get());
  server->metrics_->Preinitialize(server->model_->name);
  if (config.metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(config.host, config.metrics_port, server->metrics_->registry());
    if (!endpoint.ok()) return endpoint.status();
    server->metrics_endpoint_ = std::move(*endpoint);
  }
  server->model_->reject_reasoner_logprobs = config.reject_reasoner_logprobs;
  if (config.backend != nullptr) {
    server->backend_ = config.backend;
  } else {
    server->owned_backend_ = RouterBackend::Connect(config.router_address, config.router_timeout);
    server->backend_ = server->owned_backend_.get();
  }

  BatchStorePtr batch_store = config.redis ? NewRedisBatchStore(*config.redis, &server->clock_)
                                           : NewMemoryBatchStore();
  BatchOptions batch_options = config.batch;
  if (server->keys_ != nullptr) {
    // Batch requests count toward their key's usage, cost and tokens per minute (/admin/usage),
    // priced as direct requests are.
    batch_options.on_usage = [keys = server->keys_.get(), prices = server->prices_.get(),
                              model = server->model_->name](const std::string& owner,
                                                            const UsageInfo& usage) {
      absl::StatusOr<Principal> principal = keys->Named(owner);
      if (!principal.ok()) return;
      keys->Record(*principal, usage,
                   prices->Cost(model, usage.cached_tokens,
                                usage.prompt_tokens - usage.cached_tokens,
                                usage.completion_tokens));
    };
  }
  server->batches_ = std::make_unique<BatchManager>(std::move(batch_store), server->model_.get(),
                                                    server->backend_, &server->clock_,
                                                    std::move(batch_options));
  if (absl::Status s = server->batches_->Start(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("batch API store: ", s.message()));
  }
  if (!config.redis) {
    LogLine("W", "batch API: files and batches are kept in memory (no --redis); they do not "
                 "survive a restart");
  }

  server->service_ =
      std::make_unique<InferenceService>(server->model_.get(), server->backend_, &server->calls_,
                                         server->metrics_.get(), server->keys_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(config.host, ":", config.grpc_port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->grpc_port_);
  builder.RegisterService(server->service_.get());
  server->grpc_ = builder.BuildAndStart();
  if (server->grpc_ == nullptr || server->grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("gateway: cannot listen on ", address));
  }

  HttpServerOptions http;
  http.host = config.host;
  http.port = config.http_port;
  http.threads = config.http_threads;
  absl::StatusOr<std::unique_ptr<HttpServer>> http_server =
      HttpServer::Create(http, SessionContext{server->model_.get(), server->backend_,
                                              &server->calls_, server->prices_.get(),
                                              server->metrics_.get(), server->keys_.get(),
                                              config.sse_keepalive, server->streams_.get(),
                                              server->batches_.get()});
  if (!http_server.ok()) return http_server.status();
  server->http_ = std::move(*http_server);
  return server;
}

GatewayServer::~GatewayServer() { Shutdown(); }

void GatewayServer::StartDrain() {
  calls_.StartDrain();
  if (grpc_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health = grpc_->GetHealthCheckService()) {
      health->SetServingStatus(false);
    }
  }
}

bool GatewayServer::Idle() const { return calls_.size() == 0 && calls_.open_responses() == 0; }

void GatewayServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (grpc_ != nullptr) {
    // Reactors of calls in flight are cancelled after the grace period; their backend calls
    // are then cancelled through OnCancel.
    grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  if (http_ != nullptr) http_->Shutdown();
  // Batch requests in flight are cancelled, not stored: they run again after a restart.
  if (batches_ != nullptr) batches_->Shutdown();
  calls_.CancelAllAndWait(absl::Seconds(10));
}

}  // namespace moeserve::gateway
