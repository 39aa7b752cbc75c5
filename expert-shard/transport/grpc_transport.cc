#include "expert-shard/transport/grpc_transport.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "expert-shard/wire.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "common/grpc_channel.h"

namespace moeserve::expert_shard {
namespace {

// The state of one in-flight Exchange call.
struct Call {
  grpc::ClientContext context;
  moeserve::v1::ExchangeRequest request;
  moeserve::v1::ExchangeResponse response;
  absl::Status status;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcTransport>> GrpcTransport::Create(GrpcTransportOptions options) {
  if (options.addresses.empty()) {
    return absl::InvalidArgumentError("GrpcTransport needs at least one shard address");
  }
  if (options.liveness < absl::Milliseconds(100)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GrpcTransport liveness ", absl::FormatDuration(options.liveness), " < 100ms"));
  }
  if (options.hidden_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("GrpcTransport hidden_size ", options.hidden_size, " < 1"));
  }
  return std::unique_ptr<GrpcTransport>(new GrpcTransport(std::move(options)));
}

GrpcTransport::GrpcTransport(GrpcTransportOptions options) : options_(std::move(options)) {
  for (const std::string& address : options_.addresses) {
    // Activations of a large prefill chunk exceed gRPC's 4 MiB default.
    stubs_.push_back(moeserve::v1::ExpertShard::NewStub(
        NewLivePeerChannel(address, /*unlimited_messages=*/true, options_.liveness)));
  }
}

std::string GrpcTransport::ShardName(int32_t shard) const {
  if (shard < 0 || shard >= num_shards()) return absl::StrCat("unknown shard ", shard);
  return absl::StrCat("expert shard ", shard, " at ", options_.addresses[shard]);
}

absl::Status GrpcTransport::FromShard(int32_t shard, absl::Status status) const {
  if (status.ok()) return status;
  const absl::StatusCode code = status.code();
  if (code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kInvalidArgument) {
    return absl::Status(code, absl::StrCat(ShardName(shard), ": ", status.message()));
  }
  return absl::UnavailableError(
      absl::StrCat(ShardName(shard), ": ", absl::StatusCodeToString(code), ": ", status.message()));
}

absl::Status GrpcTransport::Exchange(int64_t layer, absl::Span<const ShardBatch> batches,
                                     std::vector<ShardResult>* results) {
  const uint64_t step = ++step_;
  std::vector<std::unique_ptr<Call>> calls;
  for (const ShardBatch& b : batches) {
    if (b.shard < 0 || b.shard >= num_shards() || b.layer != layer) {
      return absl::InvalidArgumentError(absl::StrCat("batch for shard ", b.shard, " layer ",
                                                     b.layer, " in an exchange of ", num_shards(),
                                                     " shards, layer ", layer));
    }
    auto call = std::make_unique<Call>();
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.deadline));
    BatchToProto(b, options_.hidden_size, step, &call->request);
    calls.push_back(std::move(call));
  }
  absl::Mutex mu;
  size_t pending = calls.size();
  for (size_t i = 0; i < calls.size(); ++i) {
    Call* c = calls[i].get();
    stubs_[batches[i].shard]->async()->Exchange(&c->context, &c->request, &c->response,
                                                [c, &mu, &pending](grpc::Status s) {
                                                  c->status = FromGrpcStatus(s);
                                                  absl::MutexLock lock(&mu);
                                                  --pending;
                                                });
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](size_t* p) { return *p == 0; }, &pending));
  }
  results->assign(batches.size(), ShardResult());
  absl::Status first;
  for (size_t i = 0; i < calls.size(); ++i) {
    absl::Status s = calls[i]->status;
    if (s.ok()) {
      s = ResultFromProto(calls[i]->response, batches[i], options_.hidden_size, &(*results)[i]);
    }
    (*results)[i].status = FromShard(batches[i].shard, s);
    if (first.ok()) first = (*results)[i].status;
  }
  return first;
}

absl::StatusOr<moeserve::v1::ShardInfoResponse> GrpcTransport::Info(int32_t shard) {
  if (shard < 0 || shard >= num_shards()) {
    return absl::InvalidArgumentError(absl::StrCat("no shard ", shard));
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.deadline));
  moeserve::v1::ShardInfoResponse info;
  absl::Status s =
      FromGrpcStatus(stubs_[shard]->Info(&context, moeserve::v1::ShardInfoRequest(), &info));
  if (!s.ok()) return FromShard(shard, s);
  return info;
}

absl::Status GrpcTransport::JoinCollective(int32_t shard,
                                           const moeserve::v1::JoinCollectiveRequest& request) {
  if (shard < 0 || shard >= num_shards()) {
    return absl::InvalidArgumentError(absl::StrCat("no shard ", shard));
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.deadline));
  moeserve::v1::JoinCollectiveResponse response;
  return FromShard(shard,
                   FromGrpcStatus(stubs_[shard]->JoinCollective(&context, request, &response)));
}

absl::Status GrpcTransport::VerifyShards(const Placement& placement,
                                         const engine::ModelConfig& config) {
  if (placement.num_shards() != num_shards()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "placement has ", placement.num_shards(), " shards; ", num_shards(), " addresses given"));
  }
  for (int32_t s = 0; s < num_shards(); ++s) {
    absl::StatusOr<moeserve::v1::ShardInfoResponse> info = Info(s);
    if (!info.ok()) return info.status();
    const moeserve::v1::ModelFingerprint& m = info->model();
    auto fail = [&](const std::string& what) {
      return absl::FailedPreconditionError(absl::StrCat(ShardName(s), ": ", what));
    };
    if (!info->serving()) return fail("not serving");
    if (info->shard_id() != s) return fail(absl::StrCat("reports shard id ", info->shard_id()));
    if (m.hidden_size() != config.hidden_size ||
        m.num_hidden_layers() != config.num_hidden_layers ||
        m.n_routed_experts() != config.n_routed_experts ||
        m.moe_intermediate_size() != config.moe_intermediate_size) {
      return fail(absl::StrCat("serves a model with hidden ", m.hidden_size(), ", ",
                               m.num_hidden_layers(), " layers, ", m.n_routed_experts(),
                               " experts of width ", m.moe_intermediate_size(),
                               "; the worker has hidden ", config.hidden_size, ", ",
                               config.num_hidden_layers, " layers, ", config.n_routed_experts,
                               " experts of width ", config.moe_intermediate_size));
    }
    for (int64_t layer : placement.shape().moe_layers) {
      std::vector<int32_t> want = placement.ExpertsOf(s, layer);
      std::vector<int32_t> held;
      for (const moeserve::v1::LayerExperts& le : info->layers()) {
        if (le.layer() == layer) held.assign(le.experts().begin(), le.experts().end());
      }
      for (int32_t e : want) {
        if (!std::binary_search(held.begin(), held.end(), e)) {
          return fail(absl::StrCat("does not hold expert ", e, " of layer ", layer, " (holds ",
                                   absl::StrJoin(held, ","), ")"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::expert_shard
