#ifndef MOESERVE_KVCACHE_KVCACHE_METRICS_H_
#define MOESERVE_KVCACHE_KVCACHE_METRICS_H_

#include <memory>
#include <string>

#include "kvcache/block_store.h"
#include "kvcache/kv_cache.h"
#include "prometheus/collectable.h"
#include "prometheus/registry.h"

namespace moeserve::kvcache {

// The KV-cache service's metrics (deploy/METRICS.md).
//
// Wraps `store` so that every call's latency lands in moeserve_kvcache_store_seconds{backend,op}
// (backend "redis" or "memory"; op put, get, contains, delete). The histogram family lives in
// `registry`, which must outlive the returned store.
BlockStorePtr InstrumentBlockStore(BlockStorePtr store, const std::string& backend,
                                   prometheus::Registry* registry);

// The cache's statistics (KvCache::Stats) as gauges and counters, computed at every scrape:
// blocks and bytes held, the budget, active leases; lookups, hit and miss blocks, hit tokens,
// evictions, expired leases, fetches, publishes and store errors. `cache` is not owned and must
// outlive the collectable's use.
std::shared_ptr<prometheus::Collectable> KvCacheStatsCollectable(KvCache* cache,
                                                                 const std::string& backend);

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_KVCACHE_METRICS_H_
