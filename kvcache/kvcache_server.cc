#include "kvcache/kvcache_server.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvcache/kvcache_metrics.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace moeserve::kvcache {
namespace {

absl::Status Validate(const KvCacheServerConfig& config) {
  if (config.port < 0 || config.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", config.port, " out of range"));
  }
  const KvCacheOptions& c = config.cache;
  if (c.block_tokens <= 0) return absl::InvalidArgumentError("block_tokens must be > 0");
  if (c.budget_bytes <= 0) return absl::InvalidArgumentError("budget must be > 0");
  if (c.lease_ttl <= absl::ZeroDuration())
    return absl::InvalidArgumentError("lease ttl must be > 0");
  if (c.max_block_bytes <= 0) return absl::InvalidArgumentError("max_block_bytes must be > 0");
  if (c.max_blocks_per_request <= 0) {
    return absl::InvalidArgumentError("max_blocks_per_request must be > 0");
  }
  if (config.worker_threads <= 0 || config.fetch_batch_blocks <= 0) {
    return absl::InvalidArgumentError("worker_threads and fetch_batch_blocks must be > 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvCacheServer>> KvCacheServer::Create(KvCacheServerConfig config) {
  if (absl::Status s = Validate(config); !s.ok()) return s;
  std::unique_ptr<KvCacheServer> server(new KvCacheServer());
  const Clock* clock = config.clock != nullptr ? config.clock : &server->real_clock_;

  BlockStorePtr store;
  if (config.redis.endpoints.empty()) {
    store = NewMemoryBlockStore();
  } else {
    absl::StatusOr<BlockStorePtr> redis = NewRedisBlockStore(config.redis, clock);
    if (!redis.ok()) return redis.status();
    store = std::move(*redis);
  }
  const std::string backend = config.redis.endpoints.empty() ? "memory" : "redis";
  store = InstrumentBlockStore(std::move(store), backend, server->metrics_.get());
  server->cache_ = std::make_unique<KvCache>(config.cache, std::move(store), clock);
  server->queue_ = std::make_unique<WorkQueue>(config.worker_threads);
  server->service_ = std::make_unique<KvCacheService>(server->cache_.get(), server->queue_.get(),
                                                      config.fetch_batch_blocks);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(config.host, ":", config.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  const int64_t max_request =
      std::max(config.max_request_bytes, config.cache.max_block_bytes + (int64_t{1} << 20));
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(max_request, std::numeric_limits<int>::max())));
  builder.SetMaxSendMessageSize(-1);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->queue_->Stop();
    return absl::UnavailableError(absl::StrCat("kvcache: cannot listen on ", address));
  }
  if (config.metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(config.host, config.metrics_port, server->metrics_);
    if (!endpoint.ok()) return endpoint.status();
    server->metrics_endpoint_ = std::move(*endpoint);
    server->metrics_endpoint_->Add(KvCacheStatsCollectable(server->cache_.get(), backend));
  }
  return server;
}

KvCacheServer::~KvCacheServer() { Shutdown(); }

void KvCacheServer::StartDrain() {
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
}

void KvCacheServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    // Calls in flight get a grace period, then are cancelled; their reactors still finish on the
    // queue, which therefore stops only after gRPC has.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (queue_ != nullptr) queue_->Stop();
  if (server_ != nullptr) server_->Wait();
}

void KvCacheServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moeserve::kvcache
