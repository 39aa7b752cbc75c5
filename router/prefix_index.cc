#include "router/prefix_index.h"

#include <algorithm>

namespace moeserve::router {

PrefixIndex::PrefixIndex(size_t max_blocks, size_t max_workers_per_block)
    : max_blocks_(std::max<size_t>(max_blocks, 1)),
      max_workers_per_block_(std::max<size_t>(max_workers_per_block, 1)) {}

void PrefixIndex::Record(absl::Span<const kvcache::BlockHash> hashes, WorkerId worker) {
  for (const kvcache::BlockHash& hash : hashes) {
    auto it = map_.find(hash);
    if (it == map_.end()) {
      lru_.push_front(Entry{hash, {}});
      it = map_.emplace(hash, lru_.begin()).first;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second);
    }
    std::vector<WorkerId>& workers = it->second->workers;
    workers.erase(std::remove(workers.begin(), workers.end(), worker), workers.end());
    workers.push_back(worker);
    if (workers.size() > max_workers_per_block_) workers.erase(workers.begin());
  }
  // Evict after recording, so a prompt longer than the budget keeps its latest blocks; the front
  // of a long prompt may be forgotten, which only makes the index more conservative.
  while (map_.size() > max_blocks_) {
    map_.erase(lru_.back().hash);
    lru_.pop_back();
  }
}

PrefixHits PrefixIndex::Lookup(absl::Span<const kvcache::BlockHash> hashes) const {
  PrefixHits hits;
  for (size_t i = 0; i < hashes.size(); ++i) {
    auto it = map_.find(hashes[i]);
    if (it == map_.end()) break;
    bool advanced = false;
    for (WorkerId w : it->second->workers) {
      // A worker extends its run only when it held every earlier block too.
      int64_t& held = hits[w];
      if (held == static_cast<int64_t>(i)) {
        held = static_cast<int64_t>(i) + 1;
        advanced = true;
      }
    }
    if (!advanced) break;
  }
  for (auto it = hits.begin(); it != hits.end();) {
    if (it->second == 0) {
      hits.erase(it++);
    } else {
      ++it;
    }
  }
  return hits;
}

void PrefixIndex::ForgetWorker(WorkerId worker) {
  for (auto it = lru_.begin(); it != lru_.end();) {
    std::vector<WorkerId>& workers = it->workers;
    workers.erase(std::remove(workers.begin(), workers.end(), worker), workers.end());
    if (workers.empty()) {
      map_.erase(it->hash);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace moeserve::router
