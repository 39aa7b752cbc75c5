#ifndef MOESERVE_BENCH_MODEL_COSTS_H_
#define MOESERVE_BENCH_MODEL_COSTS_H_

#include <cstdint>
#include <set>
#include <utility>

#include "engine/config.h"
#include "engine/expert_executor.h"
#include "engine/model.h"

// What a model step costs, counted from the config: the numerators of bench/engine's fractions.
namespace moeserve::bench {

// Multiply-adds per token outside attention scores (every token through every layer; the LM
// head not included).
double LinearMacsPerToken(const engine::ModelConfig& c);

// Multiply-adds of the attention scores and the weighted latent sum of an n-token prefill.
double PrefillAttentionMacs(const engine::ModelConfig& c, int64_t n);

// Bytes of one routed expert's three matrices in compute form (0 without MoE layers).
int64_t ExpertBytes(const engine::Model& m);

// Forwards to another executor and records which (layer, expert) pairs a step touched.
class CountingExperts final : public engine::ExpertExecutor {
 public:
  explicit CountingExperts(engine::ExpertExecutor* inner) : inner_(inner) {}
  absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                   const float* weights, float* out) override {
    for (int64_t i = 0; i < n * k; ++i) used_.insert({layer, ids[i]});
    return inner_->Run(layer, x, n, k, ids, weights, out);
  }
  // Distinct experts used since the last call.
  int64_t TakeCount() {
    const int64_t c = static_cast<int64_t>(used_.size());
    used_.clear();
    return c;
  }

 private:
  engine::ExpertExecutor* inner_;
  std::set<std::pair<int64_t, int32_t>> used_;
};

}  // namespace moeserve::bench

#endif  // MOESERVE_BENCH_MODEL_COSTS_H_
