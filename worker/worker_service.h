#ifndef MOESERVE_WORKER_WORKER_SERVICE_H_
#define MOESERVE_WORKER_WORKER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "moeserve/v1/worker.grpc.pb.h"
#include "worker/engine_loop.h"

namespace moeserve::worker {

enum class Role { kPrefill, kDecode, kBoth };
absl::StatusOr<Role> ParseRole(absl::string_view role);
const char* RoleName(Role role);

// The gRPC adapter of the Worker service: maps protos to JobSpecs, submits them to the engine
// loop and streams its events back. Never blocks a callback thread. A role refuses the other
// phase with FAILED_PRECONDITION. Borrows the loop, which must outlive the service.
class WorkerService final : public moeserve::v1::Worker::CallbackService {
 public:
  WorkerService(EngineLoop* loop, Role role) : loop_(loop), role_(role) {}

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* context,
                                    const moeserve::v1::PrefillRequest* request,
                                    moeserve::v1::PrefillResponse* response) override;
  grpc::ServerWriteReactor<moeserve::v1::DecodeChunk>* Decode(
      grpc::CallbackServerContext* context, const moeserve::v1::DecodeRequest* request) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const moeserve::v1::GetLoadRequest* request,
                                    moeserve::v1::WorkerLoad* response) override;

  // Graceful drain: new Prefill / Decode calls and GetLoad get UNAVAILABLE (so the router
  // retries them on other workers and stops picking this one); accepted calls go on.
  void StartDrain() { draining_.store(true); }
  // Prefill and Decode calls not yet done (their last message written).
  int64_t calls() const { return calls_.load(); }

 private:
  EngineLoop* loop_;
  Role role_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> calls_{0};
};

// Proto <-> domain conversions (exposed for tests).
JobSpec SpecFromProto(const moeserve::v1::GenerationSpec& spec);
moeserve::v1::FinishReason FinishToProto(Finish finish);

}  // namespace moeserve::worker

#endif  // MOESERVE_WORKER_WORKER_SERVICE_H_
