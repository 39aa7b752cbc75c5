#ifndef MOESERVE_ROUTER_PREFIX_INDEX_H_
#define MOESERVE_ROUTER_PREFIX_INDEX_H_

#include <cstddef>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "kvcache/block_hash.h"
#include "router/policy.h"

namespace moeserve::router {

// An approximate, bounded record of which workers recently computed which KV blocks, so that the
// prefill policy can prefer a worker that already holds a prompt's prefix. Keys are the chained
// block hashes of kvcache/block_hash.h: a block's hash names it together with everything before
// it, so "worker W has block i" implies "W has the prefix up to block i" as far as this index
// knows. It is approximate by design: workers evict without telling the router, and the index
// forgets the least recently recorded blocks once it holds `max_blocks`.
//
// Pure data structure: not thread-safe (the caller locks), no clock.
class PrefixIndex {
 public:
  // max_blocks >= 1: block hashes remembered; max_workers_per_block >= 1: workers remembered per
  // block (the most recent ones).
  explicit PrefixIndex(size_t max_blocks, size_t max_workers_per_block = 8);

  // Records that `worker` computed every block in `hashes` (a prompt's chained hashes, in order).
  // Marks them most recently used, evicting the least recently used blocks beyond max_blocks.
  void Record(absl::Span<const kvcache::BlockHash> hashes, WorkerId worker);

  // For each worker, the number of leading blocks of `hashes` it is recorded to hold (workers with
  // none are absent). Does not change recency.
  PrefixHits Lookup(absl::Span<const kvcache::BlockHash> hashes) const;

  // Forgets a worker everywhere (e.g. it restarted and lost its cache).
  void ForgetWorker(WorkerId worker);

  size_t size() const { return map_.size(); }

 private:
  struct Entry {
    kvcache::BlockHash hash;
    std::vector<WorkerId> workers;  // most recent last
  };
  using List = std::list<Entry>;  // most recently used first

  const size_t max_blocks_;
  const size_t max_workers_per_block_;
  List lru_;
  absl::flat_hash_map<kvcache::BlockHash, List::iterator> map_;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_PREFIX_INDEX_H_
