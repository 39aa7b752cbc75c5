#include "expert-shard/expert_shard_service.h"

#include <chrono>
#include <memory>
#include <utility>

#include "common/grpc_status.h"
#include "expert-shard/wire.h"

namespace moeserve::expert_shard {

ExpertShardService::ExpertShardService(ShardCompute* compute, ComputeThread* thread,
                                       const Placement* placement, int32_t shard_id,
                                       std::string compute_dtype, ShardMetrics* metrics,
                                       CollectiveHost* collective)
    : compute_(compute),
      thread_(thread),
      placement_(placement),
      shard_id_(shard_id),
      compute_dtype_(std::move(compute_dtype)),
      metrics_(metrics),
      collective_(collective) {}

grpc::ServerUnaryReactor* ExpertShardService::Info(grpc::CallbackServerContext* context,
                                                   const moeserve::v1::ShardInfoRequest*,
                                                   moeserve::v1::ShardInfoResponse* response) {
  const engine::ModelConfig& c = compute_->model().config();
  response->set_shard_id(shard_id_);
  response->set_num_shards(placement_->num_shards());
  moeserve::v1::ModelFingerprint* m = response->mutable_model();
  m->set_hidden_size(c.hidden_size);
  m->set_num_hidden_layers(c.num_hidden_layers);
  m->set_n_routed_experts(c.n_routed_experts);
  m->set_moe_intermediate_size(c.moe_intermediate_size);
  m->set_num_experts_per_tok(c.num_experts_per_tok);
  for (int64_t layer : placement_->shape().moe_layers) {
    moeserve::v1::LayerExperts* le = response->add_layers();
    le->set_layer(layer);
    // What is actually loaded, which is what the placement assigns this shard.
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      if (compute_->model().expert(layer, e).loaded) le->add_experts(static_cast<int32_t>(e));
    }
  }
  response->set_serving(true);
  response->set_compute_dtype(compute_dtype_);
  response->set_placement(placement_->spec());
  response->set_nccl(collective_ != nullptr);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ExpertShardService::Exchange(grpc::CallbackServerContext* context,
                                                       const moeserve::v1::ExchangeRequest* request,
                                                       moeserve::v1::ExchangeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  using Clock = std::chrono::steady_clock;
  const Clock::time_point arrived = Clock::now();
  const int64_t hidden = compute_->model().config().hidden_size;
  auto batch = std::make_shared<ShardBatch>();
  absl::Status parsed = BatchFromProto(*request, hidden, batch.get());
  if (!parsed.ok()) {
    if (metrics_ != nullptr) {
      metrics_->Exchanged("grpc", parsed, 0, 0, static_cast<int64_t>(request->ByteSizeLong()), 0);
    }
    reactor->Finish(ToGrpcStatus(parsed));
    return reactor;
  }
  // request and response stay valid until Finish; the batch is owned by the closure.
  thread_->Post([this, reactor, request, response, batch, hidden, arrived] {
    const Clock::time_point start = Clock::now();
    ShardResult result;
    absl::Status s = compute_->Run(*batch, &result);
    const Clock::time_point computed = Clock::now();
    if (s.ok()) {
      response->set_step(request->step());
      ResultToProto(*batch, result, hidden, response);
    }
    if (metrics_ != nullptr) {
      if (s.ok()) metrics_->CountTokens(*batch);
      metrics_->Exchanged("grpc", s, std::chrono::duration<double>(Clock::now() - arrived).count(),
                          std::chrono::duration<double>(computed - start).count(),
                          static_cast<int64_t>(request->ByteSizeLong()),
                          static_cast<int64_t>(response->ByteSizeLong()));
    }
    reactor->Finish(ToGrpcStatus(s));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ExpertShardService::JoinCollective(
    grpc::CallbackServerContext* context, const moeserve::v1::JoinCollectiveRequest* request,
    moeserve::v1::JoinCollectiveResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status s;
  if (collective_ == nullptr) {
    s = absl::FailedPreconditionError(
        "this expert shard has no NCCL data plane (built without CUDA/NCCL)");
  } else if (request->timeout_ms() < 0) {
    s = absl::InvalidArgumentError("timeout_ms must not be negative");
  } else {
    CollectiveJoin join;
    join.unique_id = request->nccl_unique_id();
    join.rank = request->rank();
    join.size = request->world_size();
    if (request->timeout_ms() > 0) join.timeout = absl::Milliseconds(request->timeout_ms());
    s = collective_->Join(join);
  }
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace moeserve::expert_shard
