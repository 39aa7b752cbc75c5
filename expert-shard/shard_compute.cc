#include "expert-shard/shard_compute.h"

#include "absl/strings/str_cat.h"
#include "engine/cpu/linear.h"
#include "engine/model/ops.h"

namespace moeserve::expert_shard {

absl::Status ShardCompute::Validate(const ShardBatch& batch) const {
  const engine::ModelConfig& c = model_->config();
  if (batch.layer < 0 || batch.layer >= c.num_hidden_layers || !c.IsMoeLayer(batch.layer)) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", batch.layer, " is not a MoE layer of this model"));
  }
  if (batch.experts.size() != batch.counts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("batch names ", batch.experts.size(),
                                                   " experts but has ", batch.counts.size(),
                                                   " row counts"));
  }
  int64_t total = 0;
  for (size_t i = 0; i < batch.experts.size(); ++i) {
    const int32_t e = batch.experts[i];
    if (i > 0 && e <= batch.experts[i - 1]) {
      return absl::InvalidArgumentError("batch experts must be ascending and distinct");
    }
    if (batch.counts[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative row count ", batch.counts[i], " for expert ", e));
    }
    if (e < 0 || e >= c.n_routed_experts || !model_->expert(batch.layer, e).loaded) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert ", e, " of layer ", batch.layer, " is not held by this shard"));
    }
    total += batch.counts[i];
  }
  if (static_cast<int64_t>(batch.rows.size()) != total * c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("batch carries ", batch.rows.size(), " floats; ",
                                                   total, " rows of width ", c.hidden_size,
                                                   " need ", total * c.hidden_size));
  }
  return absl::OkStatus();
}

absl::Status ShardCompute::Run(const ShardBatch& batch, ShardResult* result) {
  absl::Status valid = Validate(batch);
  if (!valid.ok()) return valid;
  const engine::ModelConfig& c = model_->config();
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.moe_intermediate_size;
  result->outputs.assign(batch.rows.size(), 0.0f);
  if (on_backend_ != nullptr) {
    return on_backend_->RunGroups(batch.layer, batch.experts, batch.counts, batch.rows.data(),
                                  result->outputs.data());
  }
  int64_t offset = 0;  // in rows
  for (size_t i = 0; i < batch.experts.size(); ++i) {
    const int64_t m = batch.counts[i];
    if (m == 0) continue;
    const engine::ExpertWeights& w = model_->expert(batch.layer, batch.experts[i]);
    const float* x = batch.rows.data() + offset * hidden;
    gate_.resize(m * inter);
    up_.resize(m * inter);
    engine::cpu::Linear(x, m, hidden, w.gate, gate_.data(), inter, model_->pool());
    engine::cpu::Linear(x, m, hidden, w.up, up_.data(), inter, model_->pool());
    engine::ops::SiluMul(gate_.data(), up_.data(), m * inter, gate_.data());
    engine::cpu::Linear(gate_.data(), m, inter, w.down, result->outputs.data() + offset * hidden,
                        hidden, model_->pool());
    offset += m;
  }
  return absl::OkStatus();
}

}  // namespace moeserve::expert_shard
