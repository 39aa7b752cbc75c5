#ifndef MOESERVE_KVCACHE_KVCACHE_CLIENT_H_
#define MOESERVE_KVCACHE_KVCACHE_CLIENT_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvcache/block_hash.h"
#include "kvcache/block_store.h"
#include "kvcache/kv_cache.h"

namespace moeserve::kvcache {

// How other services (workers, router) reach the KV cache. Results are the domain types of
// kv_cache.h. Implementations: GrpcKvCacheClient (kvcache/grpc_kvcache_client.h) and
// FakeKvCacheClient (tests/testing/fake_kv_cache_client.h).
//
// Status codes: INVALID_ARGUMENT for a malformed request, NOT_FOUND for an unknown lease, and
// for a remote cache UNAVAILABLE / DEADLINE_EXCEEDED when it cannot be reached (callers treat
// those as a cache miss). A cache whose storage is down answers OK with misses.
// Implementations are thread-safe.
class KvCacheClient {
 public:
  virtual ~KvCacheClient() = default;

  // How many leading blocks of `hashes` are cached; with `take_lease`, leases them (release with
  // Release once they are fetched; the lease expires anyway).
  virtual absl::StatusOr<LookupResult> Lookup(absl::Span<const BlockHash> hashes,
                                              bool take_lease) = 0;
  // Stores blocks (idempotent per hash). Dropped blocks are reported, not errors.
  virtual absl::StatusOr<PublishResult> Publish(absl::Span<const BlockView> blocks) = 0;
  // The leading cached blocks of `hashes`, in order; first_missing says where it stopped.
  virtual absl::StatusOr<FetchResult> Fetch(absl::Span<const BlockHash> hashes) = 0;
  virtual absl::Status Release(uint64_t lease_id) = 0;
  virtual absl::StatusOr<KvCacheStats> Stats() = 0;
};

using KvCacheClientPtr = std::unique_ptr<KvCacheClient>;

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_KVCACHE_CLIENT_H_
