#ifndef MOESERVE_ROUTER_ROUTER_SERVICE_H_
#define MOESERVE_ROUTER_ROUTER_SERVICE_H_

#include "moeserve/v1/router.grpc.pb.h"
#include "router/relay_executor.h"
#include "router/request_relay.h"
#include "router/router_metrics.h"
#include "router/worker_registry.h"

namespace moeserve::router {

// The Router gRPC service (callback API). Generate hands each request to a relay thread
// (RequestRelay::Run) and streams its chunks through a ServerWriteReactor; OnCancel cancels the
// worker call in flight; the call's deadline is passed down to the workers. ListWorkers reports
// the registry. Only maps proto and status; the routing lives in RequestRelay.
// Dependencies are not owned and must outlive the service (and the grpc::Server).
class RouterService final : public v1::Router::CallbackService {
 public:
  // `metrics` may be null.
  RouterService(RequestRelay* relay, WorkerRegistry* registry, RelayExecutor* executor,
                RouterMetrics* metrics = nullptr);

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
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_ROUTER_SERVICE_H_
