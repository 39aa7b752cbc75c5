#include "expert-shard/remote_expert_executor.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace moeserve::expert_shard {

namespace {

// out[t] = sum over j in order of weights[t, j] * slot_out[t * k + j]: the same float operations
// in the same order as the engine's LocalExpertExecutor, so results match it bit for bit.
void CombineInSlotOrder(const float* slot_out, const float* weights, int64_t n, int64_t k,
                        int64_t hidden, float* out) {
  for (int64_t t = 0; t < n; ++t) {
    float* dst = out + t * hidden;
    std::memset(dst, 0, sizeof(float) * hidden);
    for (int64_t j = 0; j < k; ++j) {
      const float* s = slot_out + (t * k + j) * hidden;
      const float wt = weights[t * k + j];
      for (int64_t d = 0; d < hidden; ++d) dst[d] += wt * s[d];
    }
  }
}

}  // namespace

RemoteExpertExecutor::RemoteExpertExecutor(const Placement* placement,
                                           ActivationTransport* transport, int64_t hidden_size,
                                           ReplicaChoice choice)
    : placement_(placement),
      transport_(transport),
      hidden_(hidden_size),
      choice_(choice),
      healthy_(placement->num_shards(), true) {}

void RemoteExpertExecutor::SetShardHealthy(int32_t shard, bool healthy) {
  if (shard >= 0 && shard < static_cast<int32_t>(healthy_.size())) healthy_[shard] = healthy;
}

int32_t RemoteExpertExecutor::PickShard(int64_t layer, int32_t expert, int64_t token) const {
  const std::vector<int32_t>& copies = placement_->Replicas(layer, expert);
  int64_t live = 0;
  for (int32_t s : copies) live += healthy_[s] ? 1 : 0;
  if (live == 0) return -1;
  int64_t pick = choice_ == ReplicaChoice::kSpreadByToken ? token % live : 0;
  for (int32_t s : copies) {
    if (!healthy_[s]) continue;
    if (pick-- == 0) return s;
  }
  return -1;
}

absl::Status RemoteExpertExecutor::Run(int64_t layer, const float* x, int64_t n, int64_t k,
                                       const int32_t* ids, const float* weights, float* out) {
  const int64_t n_experts = placement_->shape().n_routed_experts;
  if (!placement_->IsMoeLayer(layer)) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer, " is not a MoE layer of the placement"));
  }
  // slots[shard][expert]: the (token * k + j) slots that shard computes for that expert.
  const int num_shards = placement_->num_shards();
  std::vector<std::vector<std::vector<int64_t>>> slots(num_shards);
  for (int64_t i = 0; i < n * k; ++i) {
    const int32_t e = ids[i];
    if (e < 0 || e >= n_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert id ", e, " out of range"));
    }
    const int32_t s = PickShard(layer, e, i / k);
    if (s < 0) {
      return absl::UnavailableError(
          absl::StrCat("no healthy shard holds expert ", e, " of layer ", layer));
    }
    if (slots[s].empty()) slots[s].resize(n_experts);
    slots[s][e].push_back(i);
  }
  std::vector<ShardBatch> batches;
  for (int32_t s = 0; s < num_shards; ++s) {
    if (slots[s].empty()) continue;
    ShardBatch b;
    b.shard = s;
    b.layer = layer;
    for (int32_t e = 0; e < n_experts; ++e) {
      const std::vector<int64_t>& rows = slots[s][e];
      if (rows.empty()) continue;
      b.experts.push_back(e);
      b.counts.push_back(static_cast<int64_t>(rows.size()));
      for (int64_t slot : rows) {
        const float* src = x + (slot / k) * hidden_;
        b.rows.insert(b.rows.end(), src, src + hidden_);
      }
    }
    batches.push_back(std::move(b));
  }
  std::vector<ShardResult> results;
  absl::Status st = transport_->Exchange(layer, batches, &results);
  if (!st.ok()) return st;
  // Scatter each shard's outputs back to their slots.
  slot_out_.resize(static_cast<size_t>(n * k * hidden_));
  for (size_t b = 0; b < batches.size(); ++b) {
    const ShardBatch& batch = batches[b];
    const std::vector<float>& o = results[b].outputs;
    if (o.size() != batch.rows.size()) {
      return absl::UnavailableError(absl::StrCat(transport_->ShardName(batch.shard), " returned ",
                                                 o.size(), " floats for ", batch.rows.size(),
                                                 " sent"));
    }
    int64_t row = 0;
    for (int32_t e : batch.experts) {
      for (int64_t slot : slots[batch.shard][e]) {
        std::memcpy(&slot_out_[slot * hidden_], &o[row * hidden_], sizeof(float) * hidden_);
        ++row;
      }
    }
  }
  CombineInSlotOrder(slot_out_.data(), weights, n, k, hidden_, out);
  return absl::OkStatus();
}

}  // namespace moeserve::expert_shard
