#ifndef MOESERVE_KVCACHE_KV_CACHE_H_
#define MOESERVE_KVCACHE_KV_CACHE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/clock.h"
#include "kvcache/block_hash.h"
#include "kvcache/block_index.h"
#include "kvcache/block_store.h"

namespace moeserve::kvcache {

struct KvCacheOptions {
  int64_t block_tokens = 64;                // tokens per block (for token counts only)
  int64_t budget_bytes = int64_t{1} << 30;  // bytes of blocks the cache holds
  absl::Duration lease_ttl = absl::Seconds(30);
  int64_t max_block_bytes = int64_t{16} << 20;
  int64_t max_blocks_per_request = 4096;
};

struct LookupResult {
  int64_t present_blocks = 0;
  int64_t present_tokens = 0;
  std::optional<Lease> lease;
};

enum class PublishOutcome { kStored, kAlreadyPresent, kDroppedUnavailable, kDroppedNoSpace };

struct PublishResult {
  std::vector<PublishOutcome> outcomes;  // one per block, in order
  int64_t stored = 0;
  int64_t already_present = 0;
  int64_t dropped = 0;
};

struct FetchedBlock {
  BlockHash hash;
  std::string data;
};

struct FetchResult {
  std::vector<FetchedBlock> blocks;        // the leading blocks found, in order
  std::optional<BlockHash> first_missing;  // set when fewer than asked were found
};

struct KvCacheStats {
  IndexStats index;
  int64_t block_tokens = 0;
  int64_t hit_tokens = 0;  // tokens of the blocks Fetch returned
  int64_t fetched_blocks = 0;
  int64_t fetch_misses = 0;
  int64_t published_blocks = 0;
  int64_t duplicate_blocks = 0;
  int64_t dropped_blocks = 0;
  int64_t store_errors = 0;
};

// The cache's domain logic: a BlockIndex (which blocks count as cached, LRU, leases) in front of a
// BlockStore (the bytes). The index is a claim the store verifies: Lookup checks the leading
// blocks with the store and Fetch reads them, and a block the store answers "absent" for is
// forgotten, so the cache never reports a block it cannot deliver for long. A store that cannot
// answer (kUnavailable) turns into misses and dropped publishes, never into errors.
//
// Status codes: INVALID_ARGUMENT for malformed requests (no hashes, too many, an empty or
// oversized block), NOT_FOUND for an unknown lease. Nothing else.
//
// Thread-safe. Calls block on store I/O (outside the lock). `store` is owned; `clock` is not and
// must outlive the cache.
class KvCache {
 public:
  KvCache(KvCacheOptions options, BlockStorePtr store, const Clock* clock);
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // How many leading `hashes` are cached; with `take_lease`, leases them.
  absl::StatusOr<LookupResult> Lookup(absl::Span<const BlockHash> hashes, bool take_lease);
  // Stores blocks that are not cached yet (idempotent per hash).
  absl::StatusOr<PublishResult> Publish(absl::Span<const BlockView> blocks);
  // Reads the leading cached blocks of `hashes`, stopping at the first one not cached.
  absl::StatusOr<FetchResult> Fetch(absl::Span<const BlockHash> hashes);
  absl::Status ReleaseLease(uint64_t lease_id);
  KvCacheStats Stats();

  // The request-shape checks Lookup and Fetch apply, for callers that split a request.
  absl::Status ValidateHashes(absl::Span<const BlockHash> hashes) const;
  const KvCacheOptions& options() const { return options_; }

 private:
  const KvCacheOptions options_;
  const BlockStorePtr store_;
  absl::Mutex mu_;
  BlockIndex index_ ABSL_GUARDED_BY(mu_);
  int64_t fetched_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t fetch_misses_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t published_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t duplicate_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t dropped_blocks_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_KV_CACHE_H_
