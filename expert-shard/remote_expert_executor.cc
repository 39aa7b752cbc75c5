#include "expert-shard/remote_expert_executor.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace moeserve::expert_shard {

namespace {

// A shard failing again and again stays out of service at most 2^3 = 8 x retry_after.
constexpr int kMaxDoublings = 3;

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
                                           ReplicaChoice choice, const Clock* clock,
                                           absl::Duration retry_after)
    : placement_(placement),
      transport_(transport),
      hidden_(hidden_size),
      choice_(choice),
      clock_(clock != nullptr ? clock : &real_clock_),
      retry_after_(retry_after),
      healthy_(placement->num_shards(), true),
      down_until_(placement->num_shards(), absl::InfinitePast()),
      strikes_(placement->num_shards(), 0) {}

void RemoteExpertExecutor::SetShardHealthy(int32_t shard, bool healthy) {
  if (shard >= 0 && shard < static_cast<int32_t>(healthy_.size())) healthy_[shard] = healthy;
}

bool RemoteExpertExecutor::Usable(int32_t shard, absl::Time now) const {
  return healthy_[shard] && now >= down_until_[shard];
}

int32_t RemoteExpertExecutor::PickShard(int64_t layer, int32_t expert, int64_t token,
                                        absl::Time now) const {
  const std::vector<int32_t>& copies = placement_->Replicas(layer, expert);
  int64_t live = 0;
  for (int32_t s : copies) live += Usable(s, now) ? 1 : 0;
  if (live == 0) return -1;
  int64_t pick = choice_ == ReplicaChoice::kSpreadByToken ? token % live : 0;
  for (int32_t s : copies) {
    if (!Usable(s, now)) continue;
    if (pick-- == 0) return s;
  }
  return -1;
}

absl::Status RemoteExpertExecutor::Attempt(
    int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids, absl::Time now,
    std::vector<ShardBatch>* batches, std::vector<ShardResult>* results,
    std::vector<std::vector<std::vector<int64_t>>>* slots) {
  const int64_t n_experts = placement_->shape().n_routed_experts;
  const int num_shards = placement_->num_shards();
  batches->clear();
  results->clear();
  // slots[shard][expert]: the (token * k + j) slots that shard computes for that expert.
  slots->assign(num_shards, {});
  for (int64_t i = 0; i < n * k; ++i) {
    const int32_t e = ids[i];
    const int32_t s = PickShard(layer, e, i / k, now);
    if (s < 0) {
      return absl::UnavailableError(
          absl::StrCat("no healthy shard holds expert ", e, " of layer ", layer));
    }
    if ((*slots)[s].empty()) (*slots)[s].resize(n_experts);
    (*slots)[s][e].push_back(i);
  }
  for (int32_t s = 0; s < num_shards; ++s) {
    if ((*slots)[s].empty()) continue;
    ShardBatch b;
    b.shard = s;
    b.layer = layer;
    for (int32_t e = 0; e < n_experts; ++e) {
      const std::vector<int64_t>& rows = (*slots)[s][e];
      if (rows.empty()) continue;
      b.experts.push_back(e);
      b.counts.push_back(static_cast<int64_t>(rows.size()));
      for (int64_t slot : rows) {
        const float* src = x + (slot / k) * hidden_;
        b.rows.insert(b.rows.end(), src, src + hidden_);
      }
    }
    batches->push_back(std::move(b));
  }
  return transport_->Exchange(layer, *batches, results);
}

absl::Status RemoteExpertExecutor::Run(int64_t layer, const float* x, int64_t n, int64_t k,
                                       const int32_t* ids, const float* weights, float* out) {
  const int64_t n_experts = placement_->shape().n_routed_experts;
  if (!placement_->IsMoeLayer(layer)) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer, " is not a MoE layer of the placement"));
  }
  for (int64_t i = 0; i < n * k; ++i) {
    if (ids[i] < 0 || ids[i] >= n_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert id ", ids[i], " out of range"));
    }
  }
  std::vector<ShardBatch> batches;
  std::vector<ShardResult> results;
  std::vector<std::vector<std::vector<int64_t>>> slots;
  absl::Status failed;  // the last shard failure, reported when no copy is left
  // Each failed attempt takes at least one more shard out, so this ends.
  for (int attempt = 0; attempt <= placement_->num_shards(); ++attempt) {
    const absl::Time now = clock_->Now();
    absl::Status st = Attempt(layer, x, n, k, ids, now, &batches, &results, &slots);
    if (st.ok()) {
      for (const ShardBatch& b : batches) strikes_[b.shard] = 0;
      break;
    }
    if (!absl::IsUnavailable(st)) return st;
    // No exchange happened (no copy left): the shard failure behind it says more.
    if (results.size() != batches.size() || batches.empty()) return failed.ok() ? st : failed;
    bool taken_out = false;
    for (size_t b = 0; b < batches.size(); ++b) {
      if (absl::IsUnavailable(results[b].status)) {
        const int32_t shard = batches[b].shard;
        const absl::Duration pause = retry_after_ * (1 << std::min(strikes_[shard], kMaxDoublings));
        ++strikes_[shard];
        LogLine("W", absl::StrCat("taking ", transport_->ShardName(shard), " out of service for ",
                                  absl::FormatDuration(pause),
                                  " (its experts go to their copies, if any): ",
                                  results[b].status.message()));
        down_until_[shard] = now + pause;
        taken_out = true;
        ++failovers_;
      }
    }
    if (!taken_out) return st;
    failed = st;
    if (attempt == placement_->num_shards()) return failed;
  }
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
