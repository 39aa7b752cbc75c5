#include "router/router_server.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_channel.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "router/grpc_worker_client.h"

namespace moeserve::router {
namespace {

absl::Status Validate(const RouterConfig& config) {
  if (config.port < 0 || config.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", config.port, " out of range"));
  }
  if (config.prefill.empty() || config.decode.empty()) {
    return absl::InvalidArgumentError("at least one --prefill and one --decode worker is needed");
  }
  if (config.relay.prefill.block_tokens <= 0) {
    return absl::InvalidArgumentError("block_tokens must be > 0");
  }
  if (config.relay.retry_attempts < 0) {
    return absl::InvalidArgumentError("retry_attempts must be >= 0");
  }
  if (config.relay.prefill.alpha < 0) return absl::InvalidArgumentError("alpha must be >= 0");
  if (config.relay_threads <= 0) return absl::InvalidArgumentError("relay_threads must be > 0");
  if (config.max_queue < 0) return absl::InvalidArgumentError("max_queue must be >= 0");
  if (config.registry.poll_interval <= absl::ZeroDuration() ||
      config.registry.poll_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("poll interval and deadline must be > 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Create(RouterConfig config) {
  if (absl::Status s = Validate(config); !s.ok()) return s;
  absl::StatusOr<std::vector<WorkerEndpoint>> endpoints =
      MergeWorkerLists(config.prefill, config.decode);
  if (!endpoints.ok()) return endpoints.status();

  // Without the poller nothing refreshes last-seen times, so staleness must not apply.
  if (!config.poll_workers) config.registry.stale_after = absl::InfiniteDuration();
  std::unique_ptr<RouterServer> server(new RouterServer());
  const Clock* clock = config.clock != nullptr ? config.clock : &server->real_clock_;
  WorkerClientFactory factory = config.client_factory;
  if (!factory) {
    factory = [](const WorkerEndpoint& e) { return GrpcWorkerClient::Connect(e.address); };
  }
  server->registry_ =
      std::make_unique<WorkerRegistry>(*std::move(endpoints), factory, config.registry, clock);
  // The first resolution of dns: sources, before serving (the poller repeats it).
  server->registry_->RefreshMembership();
  server->relay_ = std::make_unique<RequestRelay>(server->registry_.get(), config.relay, clock,
                                                  &server->metrics_);
  server->executor_ = std::make_unique<RelayExecutor>(
      config.relay_threads, [metrics = &server->metrics_](size_t n) { metrics->SetQueued(n); });
  server->service_ = std::make_unique<RouterService>(
      server->relay_.get(), server->registry_.get(), server->executor_.get(), &server->metrics_,
      static_cast<size_t>(config.max_queue));
  if (config.metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(config.host, config.metrics_port, server->metrics_.registry());
    if (!endpoint.ok()) {
      server->executor_->Stop();
      return endpoint.status();
    }
    server->metrics_endpoint_ = std::move(*endpoint);
    server->metrics_endpoint_->Add(RouterMetrics::WorkerLoads(server->registry_.get()));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(config.host, ":", config.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->port_);
  // Gateways re-resolve the router's name when their connection ages out, so router replicas
  // added by the HPA get traffic (common/grpc_channel.h).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, kServerMaxConnectionAgeMs);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->executor_->Stop();
    server->metrics_endpoint_.reset();
    return absl::UnavailableError(absl::StrCat("router: cannot listen on ", address));
  }
  if (config.poll_workers) server->registry_->Start();
  return server;
}

RouterServer::~RouterServer() { Shutdown(); }

void RouterServer::StartDrain() {
  service_->StartDrain();
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
}

void RouterServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    // Calls still running after the grace period are cancelled (OnCancel cancels their worker
    // calls); their relays finish on the executor, which therefore stops only after gRPC has.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (executor_ != nullptr) executor_->Stop();
  if (server_ != nullptr) server_->Wait();
  if (registry_ != nullptr) registry_->Stop();
}

void RouterServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moeserve::router
