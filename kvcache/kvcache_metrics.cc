#include "kvcache/kvcache_metrics.h"

#include <chrono>
#include <utility>
#include <vector>

#include "common/metrics.h"
#include "prometheus/histogram.h"

namespace moeserve::kvcache {
namespace {

class InstrumentedBlockStore final : public BlockStore {
 public:
  InstrumentedBlockStore(BlockStorePtr store, const std::string& backend,
                         prometheus::Registry* registry)
      : store_(std::move(store)),
        family_(prometheus::BuildHistogram()
                    .Name("moeserve_kvcache_store_seconds")
                    .Help("Latency of one call to the block store (a Redis pipeline round trip "
                          "per shard touched), by backend and operation.")
                    .Register(*registry)),
        put_(family_.Add({{"backend", backend}, {"op", "put"}}, FastSecondsBuckets())),
        get_(family_.Add({{"backend", backend}, {"op", "get"}}, FastSecondsBuckets())),
        contains_(family_.Add({{"backend", backend}, {"op", "contains"}}, FastSecondsBuckets())),
        delete_(family_.Add({{"backend", backend}, {"op", "delete"}}, FastSecondsBuckets())) {}

  std::vector<absl::Status> Put(absl::Span<const BlockView> blocks) override {
    Timer t(&put_);
    return store_->Put(blocks);
  }
  std::vector<StoredBlock> Get(absl::Span<const BlockHash> hashes) override {
    Timer t(&get_);
    return store_->Get(hashes);
  }
  std::vector<Presence> Contains(absl::Span<const BlockHash> hashes) override {
    Timer t(&contains_);
    return store_->Contains(hashes);
  }
  void Delete(absl::Span<const BlockHash> hashes) override {
    Timer t(&delete_);
    store_->Delete(hashes);
  }
  int64_t errors() const override { return store_->errors(); }

 private:
  class Timer {
   public:
    explicit Timer(prometheus::Histogram* h) : h_(h), start_(std::chrono::steady_clock::now()) {}
    ~Timer() {
      h_->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }

   private:
    prometheus::Histogram* h_;
    std::chrono::steady_clock::time_point start_;
  };

  BlockStorePtr store_;
  prometheus::Family<prometheus::Histogram>& family_;
  prometheus::Histogram& put_;
  prometheus::Histogram& get_;
  prometheus::Histogram& contains_;
  prometheus::Histogram& delete_;
};

}  // namespace

BlockStorePtr InstrumentBlockStore(BlockStorePtr store, const std::string& backend,
                                   prometheus::Registry* registry) {
  return std::make_unique<InstrumentedBlockStore>(std::move(store), backend, registry);
}

std::shared_ptr<prometheus::Collectable> KvCacheStatsCollectable(KvCache* cache,
                                                                 const std::string& backend) {
  return std::make_shared<CallbackCollectable>([cache, backend] {
    const KvCacheStats s = cache->Stats();
    std::vector<prometheus::MetricFamily> out;
    auto gauge = [&out](const char* name, const char* help, double v) {
      out.push_back(GaugeFamily(name, help));
      AddSample(&out.back(), {}, v);
    };
    auto counter = [&out](const char* name, const char* help, double v,
                          const prometheus::Labels& labels = {}) {
      out.push_back(CounterFamily(name, help));
      AddSample(&out.back(), labels, v);
    };
    const IndexStats& i = s.index;
    gauge("moeserve_kvcache_blocks", "Blocks the index holds.", static_cast<double>(i.blocks));
    gauge("moeserve_kvcache_bytes", "Bytes of the blocks the index holds.",
          static_cast<double>(i.bytes));
    gauge("moeserve_kvcache_budget_bytes", "The byte budget (eviction starts above it).",
          static_cast<double>(i.budget_bytes));
    gauge("moeserve_kvcache_active_leases", "Leases currently pinning blocks.",
          static_cast<double>(i.active_leases));
    counter("moeserve_kvcache_lookups_total", "Lookup calls.", static_cast<double>(i.lookups));
    counter("moeserve_kvcache_lookup_blocks_total", "Blocks asked about by lookups.",
            static_cast<double>(i.lookup_blocks));
    counter("moeserve_kvcache_hit_blocks_total", "Blocks found by lookups.",
            static_cast<double>(i.hit_blocks));
    counter("moeserve_kvcache_miss_blocks_total", "Blocks not found by lookups.",
            static_cast<double>(i.miss_blocks));
    counter("moeserve_kvcache_hit_tokens_total", "Prompt tokens served from the cache (blocks returned by Fetch x block tokens).",
            static_cast<double>(s.hit_tokens));
    counter("moeserve_kvcache_evictions_total", "Blocks evicted to stay under the budget.",
            static_cast<double>(i.evictions));
    counter("moeserve_kvcache_expired_leases_total",
            "Leases that expired instead of being released.",
            static_cast<double>(i.expired_leases));
    counter("moeserve_kvcache_forgotten_blocks_total",
            "Indexed blocks the store no longer had (dropped from the index).",
            static_cast<double>(i.forgotten_blocks));
    counter("moeserve_kvcache_fetched_blocks_total", "Blocks delivered by Fetch.",
            static_cast<double>(s.fetched_blocks));
    counter("moeserve_kvcache_fetch_misses_total", "Fetches that stopped at a missing block.",
            static_cast<double>(s.fetch_misses));
    counter("moeserve_kvcache_published_blocks_total", "Blocks stored by Publish.",
            static_cast<double>(s.published_blocks));
    counter("moeserve_kvcache_duplicate_blocks_total", "Published blocks already cached.",
            static_cast<double>(s.duplicate_blocks));
    counter("moeserve_kvcache_dropped_blocks_total",
            "Published blocks not stored (store unavailable or no space).",
            static_cast<double>(s.dropped_blocks));
    counter("moeserve_kvcache_store_errors_total",
            "Block store failures (failed connects, commands, replies), by backend.",
            static_cast<double>(s.store_errors), {{"backend", backend}});
    return out;
  });
}

}  // namespace moeserve::kvcache
