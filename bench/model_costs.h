#ifndef MOESERVE_BENCH_MODEL_COSTS_H_
#define MOESERVE_BENCH_MODEL_COSTS_H_

#include <algorithm>
#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "engine/backend.h"
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
  // `backend`: where the inner executor's RunOnBackend leaves the ids (may be null for a host
  // executor).
  CountingExperts(engine::ExpertExecutor* inner, engine::Backend* backend)
      : inner_(inner), backend_(backend) {}
  absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                   const float* weights, float* out) override {
    for (int64_t i = 0; i < n * k; ++i) used_.insert({layer, ids[i]});
    return inner_->Run(layer, x, n, k, ids, weights, out);
  }
  bool RunsOnBackend(const engine::Backend* backend, int64_t layer) const override {
    return backend_ != nullptr && inner_->RunsOnBackend(backend, layer);
  }
  // The ids are copied into pinned memory without waiting and counted in TakeCount, after the
  // step has ended, so counting adds no synchronisation to the timed step.
  absl::Status RunOnBackend(int64_t layer, const float* x, int64_t n, int64_t k,
                            const int32_t* ids, const float* weights, float* out) override {
    absl::Status s = inner_->RunOnBackend(layer, x, n, k, ids, weights, out);
    if (!s.ok()) return s;
    if (pending_ == static_cast<int64_t>(copies_.size())) copies_.emplace_back();
    Copy& c = copies_[pending_++];
    if (c.buffer == nullptr || c.buffer->bytes() < n * k * 4) {
      absl::StatusOr<engine::BufferPtr> b = backend_->Allocate(
          std::max<int64_t>(n * k * 4, 4096), engine::MemoryType::kPinned);
      if (!b.ok()) return b.status();
      c.buffer = std::move(*b);
    }
    c.layer = layer;
    c.count = n * k;
    return backend_->CopyWithin(c.buffer->data(), ids, n * k * 4);
  }
  // Distinct experts used since the last call.
  int64_t TakeCount() {
    if (pending_ > 0 && backend_->Synchronize().ok()) {
      for (int64_t p = 0; p < pending_; ++p) {
        const int32_t* ids = static_cast<const int32_t*>(copies_[p].buffer->data());
        for (int64_t i = 0; i < copies_[p].count; ++i) used_.insert({copies_[p].layer, ids[i]});
      }
    }
    pending_ = 0;
    const int64_t c = static_cast<int64_t>(used_.size());
    used_.clear();
    return c;
  }

 private:
  struct Copy {
    engine::BufferPtr buffer;
    int64_t layer = 0;
    int64_t count = 0;
  };
  engine::ExpertExecutor* inner_;
  engine::Backend* backend_;
  std::set<std::pair<int64_t, int32_t>> used_;
  std::vector<Copy> copies_;  // reused step after step: allocated once per layer
  int64_t pending_ = 0;
};

}  // namespace moeserve::bench

#endif  // MOESERVE_BENCH_MODEL_COSTS_H_
