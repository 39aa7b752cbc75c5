// libFuzzer target: every RPC of moeserve.v1.ExpertShard (expert-shard/expert_shard_service.h)
// in process: shard 0 of 2 (round-robin placement) of the small random model on its compute
// thread, as ExpertShardServer::Create wires it. The first byte picks the RPC (Info, Exchange);
// the rest is parsed as its request message.
// Properties: no crash; a clear status (CheckStatus); an Exchange that succeeds answers one
// output per batch, in order, each rows x hidden_size float32 values.
#include <cstdint>
#include <memory>
#include <string>

#include "engine/config.h"
#include "engine/model.h"
#include "expert-shard/compute_thread.h"
#include "expert-shard/expert_shard_service.h"
#include "expert-shard/placement.h"
#include "expert-shard/shard_compute.h"
#include "expert-shard/shard_metrics.h"
#include "moeserve/v1/expert_shard.grpc.pb.h"
#include "tests/fuzz/grpc_fuzz_util.h"
#include "tests/fuzz/small_model.h"

namespace {

using moeserve::fuzz::CheckStatus;
using moeserve::fuzz::FuzzContext;
using moeserve::fuzz::ParseInput;
namespace v1 = moeserve::v1;
namespace es = moeserve::expert_shard;

constexpr int64_t kHidden = 64;  // SmallConfig
constexpr int kShards = 2;
constexpr int32_t kShardId = 0;

[[noreturn]] void Fail(const absl::Status& s) {
  std::fprintf(stderr, "expert shard fuzzer: %s\n", s.ToString().c_str());
  std::abort();
}

v1::ExpertShard::Stub& Stub() {
  static v1::ExpertShard::Stub* stub = [] {
    const std::string& dir = moeserve::fuzz::SmallModelDir();
    absl::StatusOr<moeserve::engine::ModelConfig> config = moeserve::engine::LoadModelConfig(dir);
    if (!config.ok()) Fail(config.status());
    absl::StatusOr<es::Placement> placement =
        es::Placement::Parse("round_robin", kShards, es::MoeShape::FromConfig(*config));
    if (!placement.ok()) Fail(placement.status());
    auto* p = new es::Placement(*std::move(placement));
    moeserve::engine::ModelOptions options;
    options.compute = moeserve::engine::ComputeDType::kF32;
    options.threads = 1;
    options.filter.attention_side = false;
    options.filter.want_expert = [p](int64_t layer, int64_t e) {
      return p->Holds(kShardId, layer, e);
    };
    auto model = moeserve::engine::Model::Load(dir, options);
    if (!model.ok()) Fail(model.status());
    auto* compute = new es::ShardCompute(model->release());
    auto* thread = new es::ComputeThread();
    auto* metrics = new es::ShardMetrics(kShardId, *p);
    auto* service = new es::ExpertShardService(compute, thread, p, kShardId, "f32", metrics);
    moeserve::fuzz::InProcessServer* server = moeserve::fuzz::InProcessServer::Start(service);
    return v1::ExpertShard::NewStub(server->channel).release();
  }();
  return *stub;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  v1::ExpertShard::Stub& stub = Stub();
  uint8_t method = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &method)) return 0;
  auto context = FuzzContext();
  if (method % 2 == 0) {
    v1::ExchangeRequest request;
    if (!ParseInput(data, size, &request)) return 0;
    v1::ExchangeResponse response;
    const grpc::Status status = stub.Exchange(context.get(), request, &response);
    CheckStatus(status, "Exchange");
    if (!status.ok()) return 0;
    MOESERVE_FUZZ_ASSERT(response.outputs_size() == request.batches_size(),
                         absl::StrCat(response.outputs_size(), " outputs for ",
                                      request.batches_size(), " batches"));
    for (int i = 0; i < response.outputs_size(); ++i) {
      const v1::ExpertOutputs& out = response.outputs(i);
      const v1::ExpertRows& in = request.batches(i);
      MOESERVE_FUZZ_ASSERT(out.expert() == in.expert() && out.rows() == in.rows(),
                           out.ShortDebugString().substr(0, 200));
      MOESERVE_FUZZ_ASSERT(
          out.outputs().size() == static_cast<size_t>(out.rows() * kHidden * 4),
          absl::StrCat(out.outputs().size(), " bytes for ", out.rows(), " rows"));
    }
  } else {
    v1::ShardInfoRequest request;
    if (!ParseInput(data, size, &request)) return 0;
    v1::ShardInfoResponse response;
    const grpc::Status status = stub.Info(context.get(), request, &response);
    CheckStatus(status, "Info");
    MOESERVE_FUZZ_ASSERT(status.ok() && response.shard_id() == kShardId, status.error_message());
  }
  return 0;
}
