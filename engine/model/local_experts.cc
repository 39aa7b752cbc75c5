#include "engine/model/local_experts.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/linear.h"
#include "engine/model.h"
#include "engine/model/ops.h"

namespace moeserve::engine {

absl::Status LocalExpertExecutor::Run(int64_t layer, const float* x, int64_t n, int64_t k,
                                      const int32_t* ids, const float* weights, float* out) {
  const ModelConfig& c = model_->config();
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.moe_intermediate_size;
  // Group (token, slot) pairs by expert.
  std::vector<std::vector<int64_t>> by_expert(c.n_routed_experts);
  for (int64_t i = 0; i < n * k; ++i) {
    int32_t e = ids[i];
    if (e < 0 || e >= c.n_routed_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert id ", e, " out of range"));
    }
    by_expert[e].push_back(i);
  }
  // Each slot's expert output, combined below in slot order so the sum per token does not
  // depend on how the batch was grouped.
  std::vector<float> slot_out(static_cast<size_t>(n * k * hidden));
  std::vector<float> xs, g, u;
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    const std::vector<int64_t>& slots = by_expert[e];
    if (slots.empty()) continue;
    const ExpertWeights& w = model_->expert(layer, e);
    if (!w.loaded) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert ", e, " of layer ", layer, " is not loaded in this process"));
    }
    const int64_t m = static_cast<int64_t>(slots.size());
    xs.resize(m * hidden);
    g.resize(m * inter);
    u.resize(m * inter);
    for (int64_t r = 0; r < m; ++r) {
      std::memcpy(&xs[r * hidden], x + (slots[r] / k) * hidden, sizeof(float) * hidden);
    }
    cpu::Linear(xs.data(), m, hidden, w.gate, g.data(), inter, model_->pool());
    cpu::Linear(xs.data(), m, hidden, w.up, u.data(), inter, model_->pool());
    ops::SiluMul(g.data(), u.data(), m * inter, g.data());
    // Down projection straight into the slots' rows would need a scatter; use xs as scratch.
    cpu::Linear(g.data(), m, inter, w.down, xs.data(), hidden, model_->pool());
    for (int64_t r = 0; r < m; ++r) {
      std::memcpy(&slot_out[slots[r] * hidden], &xs[r * hidden], sizeof(float) * hidden);
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    float* o = out + t * hidden;
    std::memset(o, 0, sizeof(float) * hidden);
    for (int64_t j = 0; j < k; ++j) {
      const float* s = &slot_out[(t * k + j) * hidden];
      float wt = weights[t * k + j];
      for (int64_t d = 0; d < hidden; ++d) o[d] += wt * s[d];
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
