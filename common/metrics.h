#ifndef MOESERVE_COMMON_METRICS_H_
#define MOESERVE_COMMON_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

// Prometheus metrics shared by every service (prometheus-cpp). Names follow
// moeserve_<component>_<what>_<unit>; deploy/METRICS.md lists every metric and its labels.
namespace moeserve {

// The /metrics endpoint of one process: a prometheus-cpp pull Exposer on host:port serving the
// registry plus any extra collectables (values computed at scrape time). Thread-safe.
class MetricsEndpoint {
 public:
  // port 0 picks a free port (read back with Port()). UNAVAILABLE when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int Port() const { return port_; }
  // Serves `collectable` too, for as long as this endpoint lives.
  void Add(std::shared_ptr<prometheus::Collectable> collectable);

 private:
  MetricsEndpoint() = default;

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  int port_ = 0;
};

// A collectable whose families are computed by a function at every scrape (for values a component
// already keeps, such as the KV cache's statistics or the router's view of worker loads).
class CallbackCollectable final : public prometheus::Collectable {
 public:
  explicit CallbackCollectable(std::function<std::vector<prometheus::MetricFamily>()> collect)
      : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return collect_(); }

 private:
  std::function<std::vector<prometheus::MetricFamily>()> collect_;
};

// Builders for CallbackCollectable families.
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help);
prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help);
void AddSample(prometheus::MetricFamily* family, const prometheus::Labels& labels, double value);

// Bucket boundaries in seconds, for latencies from about a millisecond (token gaps, exchanges)
// to minutes (whole generations).
prometheus::Histogram::BucketBoundaries FastSecondsBuckets();  // 0.5 ms .. 10 s
prometheus::Histogram::BucketBoundaries SlowSecondsBuckets();  // 10 ms .. 600 s
// 1, 2, 4, ... up to `max` (batch sizes, token counts).
prometheus::Histogram::BucketBoundaries PowersOfTwoBuckets(double max);

}  // namespace moeserve

#endif  // MOESERVE_COMMON_METRICS_H_
