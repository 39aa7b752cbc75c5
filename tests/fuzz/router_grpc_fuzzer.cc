// libFuzzer target: every RPC of moeserve.v1.Router (router/router_service.h) in process: the
// service, relay, registry and executor wired as RouterServer::Create wires them, over fake
// workers (tests/unit/router/fake_worker.h: one prefill-only, one decode-only, one both) and no
// poller. The first byte picks the RPC (Generate, ListWorkers); the rest is parsed as its request.
// The fake workers stop a sequence after kMaxFakeTokens (a real worker is bounded by its
// context), so a huge max_new_tokens cannot make an input run for minutes.
// Properties: no crash; a clear status (CheckStatus); a Generate never relays more tokens than
// max_new_tokens minus the generated_ids it came with; ListWorkers lists the three workers.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/clock.h"
#include "moeserve/v1/router.grpc.pb.h"
#include "router/relay_executor.h"
#include "router/request_relay.h"
#include "router/router_metrics.h"
#include "router/router_service.h"
#include "router/worker_registry.h"
#include "tests/fuzz/grpc_fuzz_util.h"
#include "tests/unit/router/fake_worker.h"

namespace {

using moeserve::fuzz::CheckStatus;
using moeserve::fuzz::FuzzContext;
using moeserve::fuzz::ParseInput;
namespace v1 = moeserve::v1;
namespace router = moeserve::router;

constexpr int64_t kMaxFakeTokens = 64;

// FakeWorkerClient with each call's max_new_tokens capped at kMaxFakeTokens past what it resumes.
class CappedFakeWorker final : public router::WorkerClient {
 public:
  absl::StatusOr<v1::PrefillResponse> Prefill(const v1::PrefillRequest& request,
                                              const router::CallOptions& options) override {
    return fake_.Prefill(Capped(request), options);
  }
  absl::Status Decode(const v1::DecodeRequest& request, const router::CallOptions& options,
                      const std::function<bool(const v1::DecodeChunk&)>& on_chunk) override {
    return fake_.Decode(Capped(request), options, on_chunk);
  }
  absl::StatusOr<v1::WorkerLoad> GetLoad(const router::CallOptions& options) override {
    return fake_.GetLoad(options);
  }

 private:
  template <class Request>
  static Request Capped(Request request) {
    v1::GenerationSpec* spec = request.mutable_spec();
    spec->set_max_new_tokens(static_cast<int32_t>(std::min<int64_t>(
        spec->max_new_tokens(), spec->generated_ids_size() + kMaxFakeTokens)));
    return request;
  }
  router::testing::FakeWorkerClient fake_;
};

v1::Router::Stub& Stub() {
  static v1::Router::Stub* stub = [] {
    static moeserve::RealClock clock;
    router::RegistryOptions registry_options;
    registry_options.stale_after = absl::InfiniteDuration();  // no poller (RouterServer's rule)
    auto* registry = new router::WorkerRegistry(
        std::vector<router::WorkerEndpoint>{
            {"p:1", true, false}, {"d:1", false, true}, {"pd:1", true, true}},
        [](const router::WorkerEndpoint&) { return std::make_shared<CappedFakeWorker>(); },
        registry_options, &clock);
    auto* metrics = new router::RouterMetrics();
    router::RelayOptions relay_options;
    relay_options.prefill.block_tokens = 4;
    auto* relay = new router::RequestRelay(registry, relay_options, &clock, metrics);
    auto* executor = new router::RelayExecutor(4);
    auto* service = new router::RouterService(relay, registry, executor, metrics);
    moeserve::fuzz::InProcessServer* server = moeserve::fuzz::InProcessServer::Start(service);
    return v1::Router::NewStub(server->channel).release();
  }();
  return *stub;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  v1::Router::Stub& stub = Stub();
  uint8_t method = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &method)) return 0;
  auto context = FuzzContext();
  if (method % 2 == 0) {
    v1::RouteRequest request;
    if (!ParseInput(data, size, &request)) return 0;
    auto reader = stub.Generate(context.get(), request);
    v1::RouteChunk chunk;
    int64_t tokens = 0;
    while (reader->Read(&chunk)) tokens += chunk.token_ids_size();
    const grpc::Status status = reader->Finish();
    CheckStatus(status, "Generate");
    const int64_t budget = std::max<int64_t>(
        0, int64_t{request.spec().max_new_tokens()} - request.spec().generated_ids_size());
    MOESERVE_FUZZ_ASSERT(tokens <= budget,
                         absl::StrCat(tokens, " tokens relayed for a budget of ", budget));
  } else {
    v1::ListWorkersRequest request;
    if (!ParseInput(data, size, &request)) return 0;
    v1::ListWorkersResponse response;
    const grpc::Status status = stub.ListWorkers(context.get(), request, &response);
    CheckStatus(status, "ListWorkers");
    MOESERVE_FUZZ_ASSERT(status.ok() && response.workers_size() == 3, status.error_message());
  }
  return 0;
}
