// libFuzzer target: every RPC of moeserve.v1.Worker (worker/worker_service.h) in process: the
// service over a real EngineLoop and the small random model (no KV-cache service, experts in
// process), as WorkerServer::Create wires them for role "both". The first byte picks the RPC
// (Prefill, Decode, GetLoad); the rest is parsed as its request message.
// Properties: no crash; a clear status (CheckStatus); a Decode never streams more tokens than
// max_new_tokens minus the generated_ids it resumes; every token id is in the vocabulary; the
// engine is idle again after each call (GetLoad: nothing running or waiting, every KV block free).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "engine/model.h"
#include "moeserve/v1/worker.grpc.pb.h"
#include "tests/fuzz/grpc_fuzz_util.h"
#include "tests/fuzz/small_model.h"
#include "worker/engine_loop.h"
#include "worker/worker_service.h"

namespace {

using moeserve::fuzz::CheckStatus;
using moeserve::fuzz::FuzzContext;
using moeserve::fuzz::ParseInput;
namespace v1 = moeserve::v1;
namespace worker = moeserve::worker;

constexpr int32_t kVocab = 384;  // SmallConfig

v1::Worker::Stub& Stub() {
  static v1::Worker::Stub* stub = [] {
    moeserve::engine::ModelOptions options;
    options.compute = moeserve::engine::ComputeDType::kF32;
    options.threads = 1;
    auto model = moeserve::engine::Model::Load(moeserve::fuzz::SmallModelDir(), options);
    if (!model.ok()) {
      std::fprintf(stderr, "worker fuzzer: %s\n", model.status().ToString().c_str());
      std::abort();
    }
    worker::LoopOptions loop_options;
    loop_options.engine.block_tokens = 4;
    loop_options.engine.kv_cache_tokens = 1024;
    auto* loop = new worker::EngineLoop(model->release(), nullptr, nullptr, loop_options);
    auto* service = new worker::WorkerService(loop, worker::Role::kBoth);
    moeserve::fuzz::InProcessServer* server = moeserve::fuzz::InProcessServer::Start(service);
    return v1::Worker::NewStub(server->channel).release();
  }();
  return *stub;
}

// The engine may finish releasing a job just after its answer went out, so this polls; a job or
// block that is never released (a leak) fails after the generous bound.
void CheckIdle(v1::Worker::Stub& stub) {
  v1::WorkerLoad load;
  for (int attempt = 0; attempt < 2000; ++attempt) {
    auto context = FuzzContext();
    const grpc::Status status = stub.GetLoad(context.get(), v1::GetLoadRequest(), &load);
    MOESERVE_FUZZ_ASSERT(status.ok(), status.error_message());
    if (load.running() == 0 && load.waiting() == 0 &&
        load.kv_blocks_free() == load.kv_blocks_total()) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  MOESERVE_FUZZ_ASSERT(false, absl::StrCat("the engine did not go idle: ", load.ShortDebugString()));
}

void CheckIds(const google::protobuf::RepeatedField<int32_t>& ids) {
  for (int32_t id : ids) MOESERVE_FUZZ_ASSERT(id >= 0 && id < kVocab, absl::StrCat("id ", id));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  v1::Worker::Stub& stub = Stub();
  uint8_t method = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &method)) return 0;
  auto context = FuzzContext();
  switch (method % 3) {
    case 0: {
      v1::PrefillRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      v1::PrefillResponse response;
      const grpc::Status status = stub.Prefill(context.get(), request, &response);
      CheckStatus(status, "Prefill");
      if (status.ok()) CheckIds(response.token_ids());
      break;
    }
    case 1: {
      v1::DecodeRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      auto reader = stub.Decode(context.get(), request);
      v1::DecodeChunk chunk;
      int64_t tokens = 0;
      while (reader->Read(&chunk)) {
        CheckIds(chunk.token_ids());
        tokens += chunk.token_ids_size();
      }
      CheckStatus(reader->Finish(), "Decode");
      const int64_t budget =
          int64_t{request.spec().max_new_tokens()} - request.spec().generated_ids_size();
      MOESERVE_FUZZ_ASSERT(tokens <= std::max<int64_t>(budget, 0),
                           absl::StrCat(tokens, " tokens for a budget of ", budget));
      break;
    }
    default: {
      v1::GetLoadRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      v1::WorkerLoad load;
      CheckStatus(stub.GetLoad(context.get(), request, &load), "GetLoad");
      break;
    }
  }
  CheckIdle(stub);
  return 0;
}
