#include "kvcache/block_index.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moeserve::kvcache {

BlockIndex::BlockIndex(BlockIndexOptions options, const Clock* clock)
    : options_(options), clock_(clock) {}

int64_t BlockIndex::PresentPrefix(absl::Span<const BlockHash> hashes) {
  int64_t n = 0;
  while (n < static_cast<int64_t>(hashes.size()) && entries_.contains(hashes[n])) ++n;
  return n;
}

IndexLookup BlockIndex::Lookup(absl::Span<const BlockHash> hashes, int64_t max_blocks,
                               bool take_lease) {
  SweepExpiredLeases();
  IndexLookup result;
  result.present_blocks = std::min(PresentPrefix(hashes), std::max<int64_t>(max_blocks, 0));
  const int64_t total = static_cast<int64_t>(hashes.size());
  ++counters_.lookups;
  counters_.lookup_blocks += total;
  counters_.hit_blocks += result.present_blocks;
  counters_.miss_blocks += total - result.present_blocks;
  // Last to first, so the first block ends up most recent.
  for (int64_t i = result.present_blocks - 1; i >= 0; --i) {
    MakeMostRecent(entries_.find(hashes[i])->second);
  }
  if (take_lease && result.present_blocks > 0) {
    const uint64_t id = next_lease_id_++;
    LeaseRecord record;
    record.expires = clock_->Now() + options_.lease_ttl;
    record.blocks.reserve(result.present_blocks);
    for (int64_t i = 0; i < result.present_blocks; ++i) {
      Entry& entry = entries_.find(hashes[i])->second;
      Pin(entry);
      record.blocks.emplace_back(hashes[i], entry.generation);
    }
    lease_expiry_.emplace(record.expires, id);
    result.lease = Lease{id, record.expires};
    leases_.emplace(id, std::move(record));
  }
  return result;
}

IndexInsert BlockIndex::Insert(const BlockHash& hash, int64_t bytes) {
  SweepExpiredLeases();
  IndexInsert result;
  if (auto it = entries_.find(hash); it != entries_.end()) {
    MakeMostRecent(it->second);
    result.outcome = InsertOutcome::kAlreadyPresent;
    return result;
  }
  if (bytes > options_.budget_bytes - leased_bytes_) {
    result.outcome = InsertOutcome::kNoSpace;
    return result;
  }
  while (bytes_ + bytes > options_.budget_bytes && !lru_.empty()) {
    const BlockHash victim = lru_.back();
    result.evicted.push_back(victim);
    Remove(entries_.find(victim));
    ++counters_.evictions;
  }
  Entry& entry = entries_[hash];
  entry.bytes = bytes;
  entry.generation = next_generation_++;
  lru_.push_front(hash);
  entry.lru = lru_.begin();
  bytes_ += bytes;
  result.outcome = InsertOutcome::kInserted;
  return result;
}

bool BlockIndex::Touch(const BlockHash& hash) {
  auto it = entries_.find(hash);
  if (it == entries_.end()) return false;
  MakeMostRecent(it->second);
  return true;
}

bool BlockIndex::Forget(const BlockHash& hash) {
  auto it = entries_.find(hash);
  if (it == entries_.end()) return false;
  Remove(it);
  ++counters_.forgotten_blocks;
  return true;
}

absl::Status BlockIndex::ReleaseLease(uint64_t lease_id) {
  SweepExpiredLeases();
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(
        absl::StrCat("lease ", lease_id, " is unknown, released or expired"));
  }
  EndLease(it);
  return absl::OkStatus();
}

int64_t BlockIndex::SweepExpiredLeases() {
  const absl::Time now = clock_->Now();
  int64_t expired = 0;
  while (!lease_expiry_.empty() && lease_expiry_.begin()->first <= now) {
    auto it = leases_.find(lease_expiry_.begin()->second);
    EndLease(it);  // also erases the expiry entry
    ++expired;
  }
  counters_.expired_leases += expired;
  return expired;
}

int64_t BlockIndex::lease_count(const BlockHash& hash) const {
  auto it = entries_.find(hash);
  return it == entries_.end() ? 0 : it->second.leases;
}

IndexStats BlockIndex::stats() const {
  IndexStats s = counters_;
  s.blocks = static_cast<int64_t>(entries_.size());
  s.bytes = bytes_;
  s.budget_bytes = options_.budget_bytes;
  s.active_leases = static_cast<int64_t>(leases_.size());
  return s;
}

void BlockIndex::MakeMostRecent(Entry& entry) {
  if (entry.leases == 0) lru_.splice(lru_.begin(), lru_, entry.lru);
}

void BlockIndex::Pin(Entry& entry) {
  if (entry.leases == 0) {
    lru_.erase(entry.lru);
    leased_bytes_ += entry.bytes;
  }
  ++entry.leases;
}

void BlockIndex::Unpin(const BlockHash& hash, uint64_t generation) {
  auto it = entries_.find(hash);
  if (it == entries_.end() || it->second.generation != generation) return;  // forgotten since
  Entry& entry = it->second;
  if (--entry.leases == 0) {
    leased_bytes_ -= entry.bytes;
    lru_.push_front(hash);
    entry.lru = lru_.begin();
  }
}

void BlockIndex::EndLease(absl::flat_hash_map<uint64_t, LeaseRecord>::iterator it) {
  lease_expiry_.erase({it->second.expires, it->first});
  // Last to first, so the lease's first block ends up most recent (as in Lookup).
  const auto& blocks = it->second.blocks;
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) Unpin(b->first, b->second);
  leases_.erase(it);
}

void BlockIndex::Remove(absl::flat_hash_map<BlockHash, Entry>::iterator it) {
  Entry& entry = it->second;
  if (entry.leases == 0) {
    lru_.erase(entry.lru);
  } else {
    leased_bytes_ -= entry.bytes;
  }
  bytes_ -= entry.bytes;
  entries_.erase(it);
}

}  // namespace moeserve::kvcache
