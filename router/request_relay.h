#ifndef MOESERVE_ROUTER_REQUEST_RELAY_H_
#define MOESERVE_ROUTER_REQUEST_RELAY_H_

#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "moeserve/v1/router.pb.h"
#include "router/policy.h"
#include "router/prefix_index.h"
#include "router/router_metrics.h"
#include "router/worker_client.h"
#include "router/worker_registry.h"

namespace moeserve::router {

struct RelayOptions {
  PrefillPolicyOptions prefill;  // prefill.block_tokens also sizes the prefix index's blocks
  // Extra attempts after the first: prefill retries on other workers, and decode migrations.
  int retry_attempts = 2;
  uint64_t block_hash_seed = 0;      // as the workers' kvcache seed
  size_t prefix_index_blocks = 1 << 16;
};

// Runs one routed request end to end: prefill (retried on another worker when it fails with
// UNAVAILABLE, or DEADLINE_EXCEEDED while the request's own deadline has not passed, before any
// token), then decode, migrating to another decode worker when the stream fails mid-way. A
// migrated Decode carries every token already relayed in spec.generated_ids, so the worker resumes
// the same sequence: no token is lost or repeated. The router also enforces max_new_tokens (which
// counts spec.generated_ids) across hops.
//
// Thread-safe; Run blocks (worker calls are blocking), so it runs on a relay thread.
class RequestRelay {
 public:
  // `registry`, `clock` and `metrics` (null: none) are not owned and outlive the relay.
  RequestRelay(WorkerRegistry* registry, RelayOptions options, const Clock* clock,
               RouterMetrics* metrics = nullptr);

  // Emits RouteChunks in order (the first carries cached_prompt_tokens; the last, on success, a
  // finish_reason) and returns the request's final status: OK, INVALID_ARGUMENT for a bad spec,
  // UNAVAILABLE when no eligible worker is left (with the last worker error in the message),
  // CANCELLED once options.cancel is cancelled, DEADLINE_EXCEEDED, or a worker's own error.
  absl::Status Run(const v1::GenerationSpec& spec, const CallOptions& options,
                   const std::function<void(v1::RouteChunk)>& emit);

  // Prefix hits the index would give this prompt now (for tests and debugging).
  PrefixHits LookupPrefix(const v1::GenerationSpec& spec) const;

 private:
  bool Retryable(const absl::Status& status, const CallOptions& options) const;

  WorkerRegistry* const registry_;
  const RelayOptions options_;
  const Clock* const clock_;
  RouterMetrics* const metrics_;
  mutable absl::Mutex mu_;
  PrefixIndex index_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_REQUEST_RELAY_H_
