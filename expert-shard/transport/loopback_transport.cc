#include "expert-shard/transport/loopback_transport.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace moeserve::expert_shard {

LoopbackTransport::LoopbackTransport(std::vector<ShardCompute*> shards)
    : shards_(std::move(shards)), batches_sent_(shards_.size(), 0) {}

std::string LoopbackTransport::ShardName(int32_t shard) const {
  return absl::StrCat("loopback shard ", shard);
}

absl::Status LoopbackTransport::Exchange(int64_t layer, absl::Span<const ShardBatch> batches,
                                         std::vector<ShardResult>* results) {
  ++exchanges_;
  results->assign(batches.size(), ShardResult());
  for (size_t i = 0; i < batches.size(); ++i) {
    const ShardBatch& b = batches[i];
    if (b.shard < 0 || b.shard >= num_shards()) {
      return absl::InvalidArgumentError(absl::StrCat("no shard ", b.shard));
    }
    if (b.layer != layer) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch for layer ", b.layer, " in an exchange of layer ", layer));
    }
  }
  absl::Status first;
  for (size_t i = 0; i < batches.size(); ++i) {
    const ShardBatch& b = batches[i];
    absl::Status s;
    if (shards_[b.shard] == nullptr) {
      s = absl::UnavailableError(absl::StrCat(ShardName(b.shard), " is down"));
    } else {
      ++batches_sent_[b.shard];
      s = shards_[b.shard]->Run(b, &(*results)[i]);
      if (!s.ok()) s = absl::Status(s.code(), absl::StrCat(ShardName(b.shard), ": ", s.message()));
    }
    (*results)[i].status = s;
    if (first.ok()) first = s;
  }
  return first;
}

void LoopbackTransport::SetShard(int32_t shard, ShardCompute* compute) {
  if (shard >= 0 && shard < num_shards()) shards_[shard] = compute;
}

}  // namespace moeserve::expert_shard
