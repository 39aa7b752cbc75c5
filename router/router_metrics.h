#ifndef MOESERVE_ROUTER_ROUTER_METRICS_H_
#define MOESERVE_ROUTER_ROUTER_METRICS_H_

#include <memory>

#include "absl/status/status.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "router/worker_registry.h"

namespace moeserve::router {

// The router's metrics (deploy/METRICS.md): queue time before a relay thread takes a request,
// placement decisions by phase and reason, prefill retries and decode migrations, requests by
// gRPC status, and (at scrape time) the load it sees on every worker. Thread-safe.
class RouterMetrics {
 public:
  RouterMetrics();

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void ObserveQueueSeconds(double seconds) { queue_.Observe(seconds); }
  void SetQueued(size_t waiting) { queued_.Set(static_cast<double>(waiting)); }
  // A prefill worker was chosen; `cached_blocks` of the prompt were on it (reason prefix_hit
  // when > 0, else least_load).
  void PrefillDecision(int64_t cached_blocks);
  void DecodeDecision() { decode_least_load_.Increment(); }
  void PrefillRetry() { prefill_retries_.Increment(); }
  void DecodeMigration() { migrations_.Increment(); }
  void CountRequest(const absl::Status& status);

  // Per-worker gauges computed from `registry` at every scrape: running, waiting, KV blocks free
  // and total, healthy; labels worker (address) and role (prefill, decode, both).
  static std::shared_ptr<prometheus::Collectable> WorkerLoads(const WorkerRegistry* registry);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram& queue_;
  prometheus::Gauge& queued_;
  prometheus::Family<prometheus::Counter>& decisions_;
  prometheus::Counter& prefill_prefix_hit_;
  prometheus::Counter& prefill_least_load_;
  prometheus::Counter& decode_least_load_;
  prometheus::Counter& prefill_retries_;
  prometheus::Counter& migrations_;
  prometheus::Family<prometheus::Counter>& requests_;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_ROUTER_METRICS_H_
