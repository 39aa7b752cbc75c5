#ifndef MOESERVE_TESTS_TESTING_FAKE_KV_CACHE_CLIENT_H_
#define MOESERVE_TESTS_TESTING_FAKE_KV_CACHE_CLIENT_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "kvcache/block_store.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kvcache_client.h"

namespace moeserve::testing {

// A KvCacheClient for other components' unit tests: a real in-process KvCache over a memory
// store (so leases, budget and prefix semantics behave as the service's), plus knobs to make the
// cache look unreachable and counters of calls. Thread-safe. `clock` is not owned (null: wall
// clock), so tests can expire leases with a FakeClock.
class FakeKvCacheClient final : public kvcache::KvCacheClient {
 public:
  explicit FakeKvCacheClient(kvcache::KvCacheOptions options = {}, const Clock* clock = nullptr)
      : cache_(options, kvcache::NewMemoryBlockStore(), clock != nullptr ? clock : &real_clock_) {}

  // While set, every call fails with this status (e.g. absl::UnavailableError("down")).
  void SetFailure(absl::Status status) {
    absl::MutexLock lock(&mu_);
    failure_ = std::move(status);
  }
  int64_t calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  kvcache::KvCache& cache() { return cache_; }

  absl::StatusOr<kvcache::LookupResult> Lookup(absl::Span<const kvcache::BlockHash> hashes,
                                               bool take_lease) override {
    if (absl::Status s = Enter(); !s.ok()) return s;
    return cache_.Lookup(hashes, take_lease);
  }
  absl::StatusOr<kvcache::PublishResult> Publish(
      absl::Span<const kvcache::BlockView> blocks) override {
    if (absl::Status s = Enter(); !s.ok()) return s;
    return cache_.Publish(blocks);
  }
  absl::StatusOr<kvcache::FetchResult> Fetch(absl::Span<const kvcache::BlockHash> hashes) override {
    if (absl::Status s = Enter(); !s.ok()) return s;
    return cache_.Fetch(hashes);
  }
  absl::Status Release(uint64_t lease_id) override {
    if (absl::Status s = Enter(); !s.ok()) return s;
    return cache_.ReleaseLease(lease_id);
  }
  absl::StatusOr<kvcache::KvCacheStats> Stats() override {
    if (absl::Status s = Enter(); !s.ok()) return s;
    return cache_.Stats();
  }

 private:
  absl::Status Enter() {
    absl::MutexLock lock(&mu_);
    ++calls_;
    return failure_;
  }

  RealClock real_clock_;
  kvcache::KvCache cache_;
  mutable absl::Mutex mu_;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_TESTING_FAKE_KV_CACHE_CLIENT_H_
