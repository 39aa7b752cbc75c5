#include "expert-shard/expert_shard_server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_channel.h"
#include "common/log.h"
#include "engine/backend_registry.h"
#include "engine/config.h"
#include "expert-shard/transport/nccl_peer_group.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace moeserve::expert_shard {

absl::StatusOr<std::unique_ptr<ExpertShardServer>> ExpertShardServer::Create(
    const ShardConfig& config) {
  if (config.num_shards < 1 || config.shard_id < 0 || config.shard_id >= config.num_shards) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard id ", config.shard_id, " outside [0, ", config.num_shards, ")"));
  }
  absl::StatusOr<engine::ModelConfig> model_config = engine::LoadModelConfig(config.model_dir);
  if (!model_config.ok()) return model_config.status();
  absl::StatusOr<Placement> placement =
      Placement::Parse(config.placement, config.num_shards, MoeShape::FromConfig(*model_config));
  if (!placement.ok()) return placement.status();

  std::unique_ptr<ExpertShardServer> s(new ExpertShardServer());
  s->placement_ = std::make_unique<Placement>(*std::move(placement));
  engine::ModelOptions options;
  options.compute = config.compute;
  options.threads = config.threads;
  options.filter.attention_side = false;
  const Placement* p = s->placement_.get();
  const int32_t id = config.shard_id;
  options.filter.want_expert = [p, id](int64_t layer, int64_t e) { return p->Holds(id, layer, e); };
  absl::StatusOr<std::unique_ptr<engine::Model>> model =
      engine::Model::Load(config.model_dir, options);
  if (!model.ok()) return model.status();
  s->model_ = *std::move(model);
  if (!config.backend.empty()) {
    absl::StatusOr<engine::BackendPtr> backend = engine::CreateBackend(config.backend);
    if (!backend.ok()) return backend.status();
    s->backend_ = *std::move(backend);
    absl::StatusOr<std::unique_ptr<engine::BackendExpertExecutor>> experts =
        engine::BackendExpertExecutor::Create(s->model_.get(), s->backend_.get());
    if (!experts.ok()) return experts.status();
    s->backend_experts_ = *std::move(experts);
    LogInfo(absl::StrCat("shard ", id, ": expert products run on backend '",
                         s->backend_->name(), "' (", s->backend_experts_->backend_bytes(),
                         " bytes of weights)"));
  }
  s->compute_ = std::make_unique<ShardCompute>(s->model_.get(), s->backend_experts_.get());
  s->thread_ = std::make_unique<ComputeThread>();
  s->metrics_ = std::make_unique<ShardMetrics>(id, *p);
  GroupJoiner joiner = config.collective_joiner;
  if (!joiner && NcclBuilt()) {
    joiner = NcclGroupJoiner(config.cuda_device);
  }
  if (joiner) {
    s->collective_ = std::make_unique<CollectiveHost>(
        s->compute_.get(), s->thread_.get(), id, config.num_shards, std::move(joiner),
        config.collective_joiner ? "collective" : "nccl", s->metrics_.get());
  }
  s->service_ = std::make_unique<ExpertShardService>(
      s->compute_.get(), s->thread_.get(), p, id,
      config.compute == engine::ComputeDType::kF32 ? "f32" : "bf16", s->metrics_.get(),
      s->collective_.get());
  if (config.metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(config.host, config.metrics_port, s->metrics_->registry());
    if (!endpoint.ok()) return endpoint.status();
    s->metrics_endpoint_ = *std::move(endpoint);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(config.host, ":", config.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &s->port_);
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  // Workers ping the shard to notice at once when it hangs (GrpcTransportOptions::liveness).
  AcceptPeerKeepalive(&builder);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("expert shard cannot listen on ", address));
  }
  if (grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService()) {
    health->SetServingStatus("moeserve.v1.ExpertShard", true);
  }
  LogInfo(absl::StrCat("expert shard ", id, "/", config.num_shards, " (placement '",
                       config.placement, "') serving on port ", s->port_));
  if (s->metrics_endpoint_ != nullptr) {
    LogInfo(absl::StrCat("expert shard metrics on port ", s->MetricsPort()));
  }
  return s;
}

ExpertShardServer::~ExpertShardServer() { Shutdown(); }

void ExpertShardServer::StartDrain() {
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
}

void ExpertShardServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->SetServingStatus(false);
    }
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }
  collective_.reset();  // cancels its group; its batches run on the compute thread
  thread_.reset();      // runs what is still queued, then joins
}

void ExpertShardServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moeserve::expert_shard
