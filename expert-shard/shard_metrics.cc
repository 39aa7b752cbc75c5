#include "expert-shard/shard_metrics.h"

#include <utility>

#include "common/metrics.h"

namespace moeserve::expert_shard {

ShardMetrics::ShardMetrics(int32_t shard_id, const Placement& placement)
    : registry_(std::make_shared<prometheus::Registry>()),
      exchange_(prometheus::BuildHistogram()
                    .Name("moeserve_expert_shard_exchange_seconds")
                    .Help("From an exchange's arrival to its answer (queue and compute).")
                    .Labels({{"shard", std::to_string(shard_id)}})
                    .Register(*registry_)),
      compute_(prometheus::BuildHistogram()
                   .Name("moeserve_expert_shard_compute_seconds")
                   .Help("Expert compute time of one exchange.")
                   .Labels({{"shard", std::to_string(shard_id)}})
                   .Register(*registry_)),
      exchanges_(prometheus::BuildCounter()
                     .Name("moeserve_expert_shard_exchanges_total")
                     .Help("Exchanges answered, by transport and gRPC status code name.")
                     .Labels({{"shard", std::to_string(shard_id)}})
                     .Register(*registry_)),
      received_(prometheus::BuildCounter()
                    .Name("moeserve_expert_shard_received_bytes_total")
                    .Help("Bytes of activations received, by transport.")
                    .Labels({{"shard", std::to_string(shard_id)}})
                    .Register(*registry_)),
      sent_(prometheus::BuildCounter()
                .Name("moeserve_expert_shard_sent_bytes_total")
                .Help("Bytes of expert outputs sent, by transport.")
                .Labels({{"shard", std::to_string(shard_id)}})
                .Register(*registry_)) {
  auto& tokens = prometheus::BuildCounter()
                     .Name("moeserve_expert_shard_expert_tokens_total")
                     .Help("Token rows computed per routed expert and MoE layer (expert load).")
                     .Labels({{"shard", std::to_string(shard_id)}})
                     .Register(*registry_);
  for (int64_t layer : placement.shape().moe_layers) {
    for (int64_t e = 0; e < placement.shape().n_routed_experts; ++e) {
      if (!placement.Holds(shard_id, layer, e)) continue;
      expert_tokens_[{layer, e}] =
          &tokens.Add({{"layer", std::to_string(layer)}, {"expert", std::to_string(e)}});
    }
  }
}

void ShardMetrics::CountTokens(const ShardBatch& batch) {
  for (size_t i = 0; i < batch.experts.size() && i < batch.counts.size(); ++i) {
    const auto it = expert_tokens_.find({batch.layer, batch.experts[i]});
    if (it != expert_tokens_.end()) it->second->Increment(static_cast<double>(batch.counts[i]));
  }
}

void ShardMetrics::Exchanged(const std::string& transport, const absl::Status& status,
                             double seconds, double compute_seconds, int64_t received_bytes,
                             int64_t sent_bytes) {
  const prometheus::Labels labels = {{"transport", transport}};
  exchange_.Add(labels, FastSecondsBuckets()).Observe(seconds);
  if (status.ok()) compute_.Add(labels, FastSecondsBuckets()).Observe(compute_seconds);
  exchanges_.Add({{"transport", transport}, {"code", absl::StatusCodeToString(status.code())}})
      .Increment();
  received_.Add(labels).Increment(static_cast<double>(received_bytes));
  sent_.Add(labels).Increment(static_cast<double>(sent_bytes));
}

}  // namespace moeserve::expert_shard
