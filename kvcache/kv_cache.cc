#include "kvcache/kv_cache.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace moeserve::kvcache {

KvCache::KvCache(KvCacheOptions options, BlockStorePtr store, const Clock* clock)
    : options_(options),
      store_(std::move(store)),
      index_(BlockIndexOptions{options.budget_bytes, options.lease_ttl}, clock) {}

absl::Status KvCache::ValidateHashes(absl::Span<const BlockHash> hashes) const {
  if (hashes.empty()) return absl::InvalidArgumentError("no block hashes");
  if (static_cast<int64_t>(hashes.size()) > options_.max_blocks_per_request) {
    return absl::InvalidArgumentError(
        absl::StrCat(hashes.size(), " block hashes > limit ", options_.max_blocks_per_request));
  }
  return absl::OkStatus();
}

absl::StatusOr<LookupResult> KvCache::Lookup(absl::Span<const BlockHash> hashes, bool take_lease) {
  if (absl::Status s = ValidateHashes(hashes); !s.ok()) return s;
  int64_t claimed = 0;
  {
    absl::MutexLock lock(&mu_);
    claimed = index_.PresentPrefix(hashes);
  }
  // Verify the index's claim: the store may have lost blocks (Redis eviction, restart).
  int64_t verified = claimed;
  std::vector<BlockHash> gone;
  if (claimed > 0) {
    const std::vector<Presence> presence = store_->Contains(hashes.first(claimed));
    for (int64_t i = 0; i < claimed; ++i) {
      if (presence[i] == Presence::kPresent) continue;
      verified = std::min(verified, i);
      if (presence[i] == Presence::kAbsent) gone.push_back(hashes[i]);
    }
  }
  absl::MutexLock lock(&mu_);
  for (const BlockHash& hash : gone) index_.Forget(hash);
  const IndexLookup found = index_.Lookup(hashes, verified, take_lease);
  LookupResult result;
  result.present_blocks = found.present_blocks;
  result.present_tokens = found.present_blocks * options_.block_tokens;
  result.lease = found.lease;
  return result;
}

absl::StatusOr<PublishResult> KvCache::Publish(absl::Span<const BlockView> blocks) {
  if (blocks.empty()) return absl::InvalidArgumentError("no blocks to publish");
  if (static_cast<int64_t>(blocks.size()) > options_.max_blocks_per_request) {
    return absl::InvalidArgumentError(
        absl::StrCat(blocks.size(), " blocks > limit ", options_.max_blocks_per_request));
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const int64_t size = static_cast<int64_t>(blocks[i].data.size());
    if (size == 0) return absl::InvalidArgumentError(absl::StrCat("block ", i, " is empty"));
    if (size > options_.max_block_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", i, " has ", size, " bytes > limit ", options_.max_block_bytes));
    }
  }
  PublishResult result;
  result.outcomes.resize(blocks.size(), PublishOutcome::kAlreadyPresent);
  std::vector<BlockView> to_store;
  std::vector<size_t> to_store_index;
  {
    absl::MutexLock lock(&mu_);
    absl::flat_hash_set<BlockHash> seen;
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (index_.Touch(blocks[i].hash) || !seen.insert(blocks[i].hash).second) continue;
      to_store.push_back(blocks[i]);
      to_store_index.push_back(i);
    }
  }
  const std::vector<absl::Status> put =
      to_store.empty() ? std::vector<absl::Status>() : store_->Put(to_store);
  std::vector<BlockHash> to_delete;
  {
    absl::MutexLock lock(&mu_);
    for (size_t k = 0; k < to_store.size(); ++k) {
      PublishOutcome& outcome = result.outcomes[to_store_index[k]];
      if (!put[k].ok()) {
        outcome = PublishOutcome::kDroppedUnavailable;
        continue;
      }
      IndexInsert insert =
          index_.Insert(to_store[k].hash, static_cast<int64_t>(to_store[k].data.size()));
      to_delete.insert(to_delete.end(), insert.evicted.begin(), insert.evicted.end());
      switch (insert.outcome) {
        case InsertOutcome::kInserted:
          outcome = PublishOutcome::kStored;
          break;
        case InsertOutcome::kAlreadyPresent:  // a concurrent publish of the same block won
          outcome = PublishOutcome::kAlreadyPresent;
          break;
        case InsertOutcome::kNoSpace:
          outcome = PublishOutcome::kDroppedNoSpace;
          to_delete.push_back(to_store[k].hash);
          break;
      }
    }
    for (PublishOutcome outcome : result.outcomes) {
      switch (outcome) {
        case PublishOutcome::kStored:
          ++result.stored;
          break;
        case PublishOutcome::kAlreadyPresent:
          ++result.already_present;
          break;
        case PublishOutcome::kDroppedUnavailable:
        case PublishOutcome::kDroppedNoSpace:
          ++result.dropped;
          break;
      }
    }
    published_blocks_ += result.stored;
    duplicate_blocks_ += result.already_present;
    dropped_blocks_ += result.dropped;
  }
  if (!to_delete.empty()) store_->Delete(to_delete);
  return result;
}

absl::StatusOr<FetchResult> KvCache::Fetch(absl::Span<const BlockHash> hashes) {
  if (absl::Status s = ValidateHashes(hashes); !s.ok()) return s;
  int64_t claimed = 0;
  {
    absl::MutexLock lock(&mu_);
    claimed = index_.PresentPrefix(hashes);
  }
  FetchResult result;
  std::vector<StoredBlock> stored =
      claimed > 0 ? store_->Get(hashes.first(claimed)) : std::vector<StoredBlock>();
  absl::MutexLock lock(&mu_);
  bool contiguous = true;
  for (int64_t i = 0; i < claimed; ++i) {
    if (stored[i].presence != Presence::kPresent) {
      // The store lost it: forget it so that lookups stop reporting it and the next publish
      // stores it again. Every lost block of the answer is forgotten, not only the first: after
      // a Redis restart all of them are gone, and forgetting one per fetch healed a long prefix
      // one block per request (found by tests/integration/resilience/test_chaos.py).
      if (stored[i].presence == Presence::kAbsent) index_.Forget(hashes[i]);
      contiguous = false;
      continue;
    }
    if (!contiguous) continue;
    index_.Touch(hashes[i]);
    result.blocks.push_back(FetchedBlock{hashes[i], std::move(stored[i].data)});
  }
  if (result.blocks.size() < hashes.size()) {
    result.first_missing = hashes[result.blocks.size()];
    ++fetch_misses_;
  }
  fetched_blocks_ += static_cast<int64_t>(result.blocks.size());
  return result;
}

absl::Status KvCache::ReleaseLease(uint64_t lease_id) {
  absl::MutexLock lock(&mu_);
  return index_.ReleaseLease(lease_id);
}

KvCacheStats KvCache::Stats() {
  KvCacheStats stats;
  stats.store_errors = store_->errors();
  absl::MutexLock lock(&mu_);
  index_.SweepExpiredLeases();
  stats.index = index_.stats();
  stats.block_tokens = options_.block_tokens;
  // Tokens served: workers Fetch without a Lookup first, so lookups' hits would leave this at 0.
  stats.hit_tokens = fetched_blocks_ * options_.block_tokens;
  stats.fetched_blocks = fetched_blocks_;
  stats.fetch_misses = fetch_misses_;
  stats.published_blocks = published_blocks_;
  stats.duplicate_blocks = duplicate_blocks_;
  stats.dropped_blocks = dropped_blocks_;
  return stats;
}

}  // namespace moeserve::kvcache
