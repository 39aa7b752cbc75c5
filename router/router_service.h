#ifndef MOESERVE_ROUTER_ROUTER_SERVICE_H_
#define MOESERVE_ROUTER_ROUTER_SERVICE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "moeserve/v1/router.grpc.pb.h"
#include "router/relay_executor.h"
#include "router/request_relay.h"
#include "router/router_metrics.h"
#include "router/worker_registry.h"

namespace moeserve::router {

// The Router gRPC service (callback API). Generate hands each request to a relay thread
// (RequestRelay::Run) and streams its chunks through a ServerWriteReactor; OnCancel cancels the
// worker call in flight; the call's deadline is passed down to the workers. ListWorkers reports
// the registry. Only maps proto and status; the routing lives in RequestRelay. When every relay
// thread is busy and `max_queue` requests already wait, Generate answers RESOURCE_EXHAUSTED at
// once (the gateway's 429 with Retry-After) instead of queueing without bound.
// Dependencies are not owned and must outlive the service (and the grpc::Server).
class RouterService final : public v1::Router::CallbackService {
 public:
  // `metrics` may be null.
  // `max_queue`: requests that may wait for a relay thread; more get RESOURCE_EXHAUSTED.
  RouterService(RequestRelay* relay, WorkerRegistry* registry, RelayExecutor* executor,
                RouterMetrics* metrics = nullptr, size_t max_queue = kDefaultMaxQueue);

  static constexpr size_t kDefaultMaxQueue = 512;

  // Graceful drain: new Generate calls get UNAVAILABLE; the ones accepted go on.
  void StartDrain() { draining_.store(true); }
  // Generate calls accepted and not yet finished by their relay.
  int64_t in_flight() const { return in_flight_.load(); }

  grpc::ServerWriteReactor<v1::RouteChunk>* Generate(grpc::CallbackServerContext* context,
                                                     const v1::RouteRequest* request) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* context,
                                        const v1::ListWorkersRequest* request,
                                        v1::ListWorkersResponse* response) override;

 private:
  RequestRelay* const relay_;
  WorkerRegistry* const registry_;
  RelayExecutor* const executor_;
  RouterMetrics* const metrics_;
  const size_t max_queue_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> in_flight_{0};
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_ROUTER_SERVICE_H_
