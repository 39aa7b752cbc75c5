#include "router/router_metrics.h"

#include <string>
#include <vector>

#include "common/metrics.h"

namespace moeserve::router {

RouterMetrics::RouterMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      queue_(prometheus::BuildHistogram()
                 .Name("moeserve_router_queue_time_seconds")
                 .Help("From a Generate call's arrival until a relay thread starts it.")
                 .Register(*registry_)
                 .Add({}, FastSecondsBuckets())),
      queued_(prometheus::BuildGauge()
                  .Name("moeserve_router_queued_requests")
                  .Help("Generate calls waiting for a relay thread (ordered by priority).")
                  .Register(*registry_)
                  .Add({})),
      decisions_(prometheus::BuildCounter()
                     .Name("moeserve_router_decisions_total")
                     .Help("Workers chosen, by phase (prefill, decode) and reason (prefix_hit: "
                           "the worker held part of the prompt; least_load: by load alone).")
                     .Register(*registry_)),
      prefill_prefix_hit_(decisions_.Add({{"phase", "prefill"}, {"reason", "prefix_hit"}})),
      prefill_least_load_(decisions_.Add({{"phase", "prefill"}, {"reason", "least_load"}})),
      decode_least_load_(decisions_.Add({{"phase", "decode"}, {"reason", "least_load"}})),
      prefill_retries_(prometheus::BuildCounter()
                           .Name("moeserve_router_retries_total")
                           .Help("Prefills retried on another worker after a failure.")
                           .Register(*registry_)
                           .Add({{"phase", "prefill"}})),
      migrations_(prometheus::BuildCounter()
                      .Name("moeserve_router_migrations_total")
                      .Help("Decode streams moved to another worker mid-way.")
                      .Register(*registry_)
                      .Add({})),
      requests_(prometheus::BuildCounter()
                    .Name("moeserve_router_requests_total")
                    .Help("Routed requests by final gRPC status code name.")
                    .Register(*registry_)) {}

void RouterMetrics::PrefillDecision(int64_t cached_blocks) {
  (cached_blocks > 0 ? prefill_prefix_hit_ : prefill_least_load_).Increment();
}

void RouterMetrics::CountRequest(const absl::Status& status) {
  requests_.Add({{"code", absl::StatusCodeToString(status.code())}}).Increment();
}

std::shared_ptr<prometheus::Collectable> RouterMetrics::WorkerLoads(
    const WorkerRegistry* registry) {
  return std::make_shared<CallbackCollectable>([registry] {
    prometheus::MetricFamily running = GaugeFamily(
        "moeserve_router_worker_running_sequences", "Sequences running on the worker (last poll).");
    prometheus::MetricFamily waiting = GaugeFamily(
        "moeserve_router_worker_waiting_sequences", "Sequences waiting on the worker (last poll).");
    prometheus::MetricFamily free = GaugeFamily("moeserve_router_worker_kv_blocks_free",
                                                "Free KV blocks on the worker (last poll).");
    prometheus::MetricFamily total = GaugeFamily("moeserve_router_worker_kv_blocks_capacity",
                                                 "KV blocks of the worker's pool (last poll).");
    prometheus::MetricFamily healthy =
        GaugeFamily("moeserve_router_worker_healthy",
                    "1 when the router considers the worker healthy, else 0.");
    for (const v1::WorkerStatus& w : registry->List()) {
      const prometheus::Labels labels = {{"worker", w.address()}, {"role", w.role()}};
      AddSample(&running, labels, static_cast<double>(w.load().running()));
      AddSample(&waiting, labels, static_cast<double>(w.load().waiting()));
      AddSample(&free, labels, static_cast<double>(w.load().kv_blocks_free()));
      AddSample(&total, labels, static_cast<double>(w.load().kv_blocks_total()));
      AddSample(&healthy, labels, w.healthy() ? 1 : 0);
    }
    return std::vector<prometheus::MetricFamily>{running, waiting, free, total, healthy};
  });
}

}  // namespace moeserve::router
