#ifndef MOESERVE_KVCACHE_KVCACHE_SERVER_H_
#define MOESERVE_KVCACHE_KVCACHE_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "grpcpp/server.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kvcache_service.h"
#include "kvcache/redis_block_store.h"
#include "kvcache/work_queue.h"

namespace moeserve::kvcache {

struct KvCacheServerConfig {
  std::string host = "0.0.0.0";
  int port = 0;  // 0: pick a free port (read it back with Port())
  int metrics_port = -1;  // Prometheus /metrics: -1 off, 0 any free port
  // Endpoints empty: blocks in process memory. Otherwise blocks in Redis, sharded by hash.
  RedisStoreOptions redis;
  KvCacheOptions cache;
  int worker_threads = 4;      // threads for store I/O
  int fetch_batch_blocks = 32;  // blocks a Fetch stream reads from the store at a time
  // The largest request accepted (Publish carries many blocks); at least max_block_bytes + 1 MiB.
  int64_t max_request_bytes = int64_t{64} << 20;
  const Clock* clock = nullptr;  // not owned; null: wall clock
};

// The KV-cache gRPC server: KvCache + store + the KvCache service, the standard health service
// (grpc.health.v1, serving once Create returns) and server reflection.
//
// Create() returns once the server listens. Shutdown() stops accepting, lets calls in flight
// finish (cancelling them after a short grace period) and is idempotent; the destructor calls it.
class KvCacheServer {
 public:
  // INVALID_ARGUMENT for a bad config; UNAVAILABLE when the port cannot be bound. A Redis that is
  // down is not an error (its blocks are misses until it is back).
  static absl::StatusOr<std::unique_ptr<KvCacheServer>> Create(KvCacheServerConfig config);
  ~KvCacheServer();
  KvCacheServer(const KvCacheServer&) = delete;
  KvCacheServer& operator=(const KvCacheServer&) = delete;

  int Port() const { return port_; }
  int MetricsPort() const { return metrics_endpoint_ ? metrics_endpoint_->Port() : 0; }
  // Drain (SIGTERM): health NOT_SERVING so that clients stop picking this process. Its calls
  // are short unary ones: Shutdown's grace period lets those in flight finish.
  void StartDrain();
  void Shutdown();
  // Blocks until Shutdown is called (from another thread).
  void Wait();

 private:
  KvCacheServer() = default;

  RealClock real_clock_;
  std::shared_ptr<prometheus::Registry> metrics_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<WorkQueue> queue_;
  std::unique_ptr<KvCacheService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;  // last: scrapes read cache_
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_KVCACHE_SERVER_H_
