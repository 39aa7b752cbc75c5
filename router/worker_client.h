#ifndef MOESERVE_ROUTER_WORKER_CLIENT_H_
#define MOESERVE_ROUTER_WORKER_CLIENT_H_

#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "moeserve/v1/worker.pb.h"

namespace moeserve::router {

// Cancels the worker call in flight for one routed request (the client went away, or the router
// shuts down). Thread-safe. The callback set by the running call is invoked under the token's
// lock, so once SetCallback(nullptr) returns no invocation is running or will start; callbacks
// must therefore be quick and must not touch the token (grpc::ClientContext::TryCancel is).
class CancelToken {
 public:
  // Idempotent.
  void Cancel();
  bool cancelled() const;
  // Installs the callback for the call in flight; runs it at once when already cancelled.
  void SetCallback(std::function<void()> callback);

 private:
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> callback_ ABSL_GUARDED_BY(mu_);
};

struct CallOptions {
  absl::Time deadline = absl::InfiniteFuture();
  CancelToken* cancel = nullptr;  // not owned; may be null
};

// One worker, as the router sees it (proto/moeserve/v1/worker.proto). Calls BLOCK until the worker
// answers, the deadline passes or the token is cancelled, so they run on the router's relay and
// poller threads, never on gRPC callback threads. Implementations are thread-safe.
// Errors are the worker's status (UNAVAILABLE when it cannot be reached, DEADLINE_EXCEEDED,
// CANCELLED after CancelToken::Cancel, ...).
class WorkerClient {
 public:
  virtual ~WorkerClient() = default;

  virtual absl::StatusOr<v1::PrefillResponse> Prefill(const v1::PrefillRequest& request,
                                                      const CallOptions& options) = 0;

  // Streams chunks to on_chunk in order, on the calling thread. When on_chunk returns false the
  // call is cancelled and Decode returns once the stream is closed (its status then does not
  // matter). OK when the worker ended the stream normally.
  virtual absl::Status Decode(const v1::DecodeRequest& request, const CallOptions& options,
                              const std::function<bool(const v1::DecodeChunk&)>& on_chunk) = 0;

  virtual absl::StatusOr<v1::WorkerLoad> GetLoad(const CallOptions& options) = 0;
};

using WorkerClientPtr = std::shared_ptr<WorkerClient>;

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_WORKER_CLIENT_H_
