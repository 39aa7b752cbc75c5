// libFuzzer target: every RPC of moeserve.v1.Inference (the gateway's gRPC front end,
// gateway/inference_service.h) in process over the test model and a fake backend. The first
// byte picks the RPC (Generate, ListModels); the rest is parsed as its request message.
// Properties: no crash; a clear status (grpc_fuzz_util.h CheckStatus); a Generate that succeeds
// streamed at least one response.
#include <cstdint>

#include "gateway/inference_service.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "tests/fuzz/gateway_fixture.h"
#include "tests/fuzz/grpc_fuzz_util.h"

namespace {

using moeserve::fuzz::CheckStatus;
using moeserve::fuzz::FuzzContext;
namespace v1 = moeserve::v1;

v1::Inference::Stub& Stub() {
  static v1::Inference::Stub* stub = [] {
    moeserve::fuzz::GatewayFixture& f = moeserve::fuzz::GatewayFixture::Get();
    auto* service = new moeserve::gateway::InferenceService(f.model.get(), f.no_hold_backend.get(),
                                                            &f.calls, f.metrics.get());
    moeserve::fuzz::InProcessServer* server = moeserve::fuzz::InProcessServer::Start(service);
    return v1::Inference::NewStub(server->channel).release();
  }();
  return *stub;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  v1::Inference::Stub& stub = Stub();
  uint8_t method = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &method)) return 0;
  auto context = FuzzContext();
  if (method % 2 == 0) {
    v1::InferenceRequest request;
    if (!moeserve::fuzz::ParseInput(data, size, &request)) return 0;
    auto reader = stub.Generate(context.get(), request);
    const int responses = moeserve::fuzz::ReadAll<v1::InferenceResponse>(reader.get());
    const grpc::Status status = reader->Finish();
    CheckStatus(status, "Generate");
    MOESERVE_FUZZ_ASSERT(!status.ok() || responses > 0, "Generate succeeded with no response");
  } else {
    v1::ListModelsRequest request;
    if (!moeserve::fuzz::ParseInput(data, size, &request)) return 0;
    v1::ListModelsResponse response;
    const grpc::Status status = stub.ListModels(context.get(), request, &response);
    CheckStatus(status, "ListModels");
    MOESERVE_FUZZ_ASSERT(!status.ok() || response.models_size() > 0, "no model listed");
  }
  return 0;
}
