#ifndef MOESERVE_KVCACHE_BLOCK_INDEX_H_
#define MOESERVE_KVCACHE_BLOCK_INDEX_H_

#include <cstdint>
#include <list>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/clock.h"
#include "kvcache/block_hash.h"

namespace moeserve::kvcache {

struct BlockIndexOptions {
  int64_t budget_bytes = int64_t{1} << 30;  // sum of block sizes the index admits
  absl::Duration lease_ttl = absl::Seconds(30);
};

struct Lease {
  uint64_t id = 0;
  absl::Time expires;
};

struct IndexLookup {
  int64_t present_blocks = 0;  // leading blocks present
  std::optional<Lease> lease;  // set when asked for and present_blocks > 0
};

enum class InsertOutcome { kInserted, kAlreadyPresent, kNoSpace };

struct IndexInsert {
  InsertOutcome outcome = InsertOutcome::kInserted;
  std::vector<BlockHash> evicted;  // blocks dropped to make room; the caller deletes their bytes
};

struct IndexStats {
  int64_t blocks = 0;
  int64_t bytes = 0;
  int64_t budget_bytes = 0;
  int64_t lookups = 0;
  int64_t lookup_blocks = 0;
  int64_t hit_blocks = 0;
  int64_t miss_blocks = 0;
  int64_t evictions = 0;
  int64_t active_leases = 0;
  int64_t expired_leases = 0;
  int64_t forgotten_blocks = 0;
};

// Which blocks are cached, their sizes and recency, and the leases on them. Pure state: no I/O,
// time only from the injected Clock.
//
// - Eviction is least-recently-used under a byte budget. A leased block is never evicted: it leaves
//   the LRU list while any lease holds it and re-enters as most recent when the last one ends.
// - A lease pins a set of blocks until ReleaseLease or until it expires (options.lease_ttl after it
//   was taken). Expired leases are reclaimed at the start of every call that changes state, and
//   by SweepExpiredLeases(); each is counted once in expired_leases.
// - Lookup touches hits from the last to the first, so a prefix's later blocks are evicted before
//   its earlier ones (an earlier block is shared by more prompts).
//
// Not thread-safe: the owner (KvCache) serialises calls. `clock` is not owned and must outlive
// the index.
class BlockIndex {
 public:
  BlockIndex(BlockIndexOptions options, const Clock* clock);
  BlockIndex(const BlockIndex&) = delete;
  BlockIndex& operator=(const BlockIndex&) = delete;

  // The number of leading `hashes` present. No accounting, no recency change.
  int64_t PresentPrefix(absl::Span<const BlockHash> hashes);

  // Counts a lookup of `hashes`: the leading present blocks, capped at `max_blocks`, are hits and
  // the rest misses. Hits become most recent; with `take_lease` (and at least one hit) they are
  // leased together under one new lease.
  IndexLookup Lookup(absl::Span<const BlockHash> hashes, int64_t max_blocks, bool take_lease);

  // Admits a block of `bytes` bytes, evicting least-recently-used unleased blocks as needed.
  // kAlreadyPresent touches the existing block and ignores `bytes`. kNoSpace (nothing evicted)
  // when even evicting every unleased block would not make room.
  IndexInsert Insert(const BlockHash& hash, int64_t bytes);

  // Marks a block used (a fetch). Returns whether it is present.
  bool Touch(const BlockHash& hash);

  // Forgets a block whose bytes are gone from the store (counted in forgotten_blocks), even if
  // leased. Returns whether it was present.
  bool Forget(const BlockHash& hash);

  // Ends a lease. NOT_FOUND for an unknown, released or expired lease.
  absl::Status ReleaseLease(uint64_t lease_id);

  // Reclaims every lease whose expiry is not after now. Returns how many.
  int64_t SweepExpiredLeases();

  bool Contains(const BlockHash& hash) const { return entries_.contains(hash); }
  // Leases currently pinning `hash` (0 when absent).
  int64_t lease_count(const BlockHash& hash) const;
  IndexStats stats() const;

 private:
  struct Entry {
    int64_t bytes = 0;
    int64_t leases = 0;
    uint64_t generation = 0;             // tells a re-inserted block from the one a lease pinned
    std::list<BlockHash>::iterator lru;  // valid only when leases == 0
  };
  struct LeaseRecord {
    absl::Time expires;
    std::vector<std::pair<BlockHash, uint64_t>> blocks;  // hash, generation
  };

  void MakeMostRecent(Entry& entry);
  void Pin(Entry& entry);
  void Unpin(const BlockHash& hash, uint64_t generation);
  void EndLease(absl::flat_hash_map<uint64_t, LeaseRecord>::iterator it);
  void Remove(absl::flat_hash_map<BlockHash, Entry>::iterator it);

  const BlockIndexOptions options_;
  const Clock* const clock_;
  absl::flat_hash_map<BlockHash, Entry> entries_;
  std::list<BlockHash> lru_;  // unleased blocks, most recent first
  absl::flat_hash_map<uint64_t, LeaseRecord> leases_;
  std::set<std::pair<absl::Time, uint64_t>> lease_expiry_;  // (expires, lease id)
  uint64_t next_lease_id_ = 1;
  uint64_t next_generation_ = 1;
  int64_t bytes_ = 0;
  int64_t leased_bytes_ = 0;
  IndexStats counters_;  // the cumulative fields only
};

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_BLOCK_INDEX_H_
