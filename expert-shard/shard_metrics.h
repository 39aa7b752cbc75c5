#ifndef MOESERVE_EXPERT_SHARD_SHARD_METRICS_H_
#define MOESERVE_EXPERT_SHARD_SHARD_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "expert-shard/placement.h"
#include "expert-shard/transport/activation_transport.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moeserve::expert_shard {

// An expert shard's metrics (deploy/METRICS.md), all with a constant `shard` label: tokens
// (rows) per expert per layer, the heat map of expert load, with a zero series for every expert
// the shard holds; exchange latency (arrival to answer) and compute time; exchanges by status;
// bytes received and sent, by transport. Thread-safe.
class ShardMetrics {
 public:
  ShardMetrics(int32_t shard_id, const Placement& placement);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // One batch's rows, counted per expert.
  void CountTokens(const ShardBatch& batch);
  // An exchange answered after `seconds` (compute included), with its message sizes.
  void Exchanged(const std::string& transport, const absl::Status& status, double seconds,
                 double compute_seconds, int64_t received_bytes, int64_t sent_bytes);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  absl::flat_hash_map<std::pair<int64_t, int64_t>, prometheus::Counter*> expert_tokens_;
  prometheus::Family<prometheus::Histogram>& exchange_;
  prometheus::Family<prometheus::Histogram>& compute_;
  prometheus::Family<prometheus::Counter>& exchanges_;
  prometheus::Family<prometheus::Counter>& received_;
  prometheus::Family<prometheus::Counter>& sent_;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_SHARD_METRICS_H_
