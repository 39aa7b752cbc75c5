#ifndef MOESERVE_ROUTER_ROUTER_SERVER_H_
#define MOESERVE_ROUTER_ROUTER_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "grpcpp/server.h"
#include "router/relay_executor.h"
#include "router/request_relay.h"
#include "router/router_metrics.h"
#include "router/router_service.h"
#include "router/worker_registry.h"

namespace moeserve::router {

struct RouterConfig {
  std::string host = "0.0.0.0";
  int port = 0;  // 0: pick a free port (read it back with Port())
  int metrics_port = -1;  // Prometheus /metrics: -1 off, 0 any free port
  std::vector<std::string> prefill;  // worker addresses, host:port
  std::vector<std::string> decode;   // an address in both lists serves both phases
  RelayOptions relay;
  RegistryOptions registry;
  int relay_threads = 64;  // requests relayed at once
  // Requests that may wait for a relay thread; beyond it Generate is RESOURCE_EXHAUSTED.
  int max_queue = static_cast<int>(RouterService::kDefaultMaxQueue);
  // Run the background GetLoad poller. Without it loads stay zero, staleness is off, and a worker
  // the relay saw fail stays unhealthy.
  bool poll_workers = true;
  // Null: GrpcWorkerClient::Connect. Tests inject fakes.
  WorkerClientFactory client_factory;
  const Clock* clock = nullptr;  // not owned; null: wall clock
};

// The router's gRPC server: the Router service, the standard health service (serving once Create
// returns) and server reflection, over a WorkerRegistry (polled in the background) and a
// RequestRelay run on RelayExecutor threads.
//
// Shutdown() stops accepting, cancels calls still running after a short grace period (which
// cancels their worker calls), waits for them, and is idempotent; the destructor calls it.
class RouterServer {
 public:
  // INVALID_ARGUMENT for a bad config (no workers, a malformed address, bad numbers); UNAVAILABLE
  // when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<RouterServer>> Create(RouterConfig config);
  ~RouterServer();
  RouterServer(const RouterServer&) = delete;
  RouterServer& operator=(const RouterServer&) = delete;

  int Port() const { return port_; }
  int MetricsPort() const { return metrics_endpoint_ ? metrics_endpoint_->Port() : 0; }
  WorkerRegistry* registry() { return registry_.get(); }
  RequestRelay* relay() { return relay_.get(); }
  // Graceful drain: health NOT_SERVING, new requests UNAVAILABLE, accepted ones go on;
  // Idle() is true once none is left.
  void StartDrain();
  bool Idle() const { return service_->in_flight() == 0; }
  void Shutdown();
  // Blocks until Shutdown is called (from another thread).
  void Wait();

 private:
  RouterServer() = default;

  RealClock real_clock_;
  RouterMetrics metrics_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<RequestRelay> relay_;
  std::unique_ptr<RelayExecutor> executor_;
  std::unique_ptr<RouterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;  // last: scrapes read the members above
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_ROUTER_SERVER_H_
