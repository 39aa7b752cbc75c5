#ifndef MOESERVE_KVCACHE_REDIS_BLOCK_STORE_H_
#define MOESERVE_KVCACHE_REDIS_BLOCK_STORE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/redis_client.h"
#include "kvcache/block_store.h"

namespace moeserve::kvcache {

// The endpoint type and its parser are shared with the gateway's Batch API (common/redis_client.h).
using ::moeserve::ParseRedisEndpoints;
using ::moeserve::RedisEndpoint;

struct RedisStoreOptions {
  std::vector<RedisEndpoint> endpoints;  // blocks are sharded over these by hash
  std::string key_prefix = "moeserve:kv:";
  absl::Duration connect_timeout = absl::Milliseconds(500);
  absl::Duration io_timeout = absl::Seconds(2);
  // After a failure, calls to that endpoint report kUnavailable without trying to reconnect until
  // this much time has passed (so a dead endpoint costs no connect timeout per call). 0: retry on
  // every call.
  absl::Duration reconnect_backoff = absl::Milliseconds(200);
};

// The Redis key of a block: key_prefix + 32 hex digits.
std::string RedisBlockKey(absl::string_view key_prefix, const BlockHash& hash);
// Which endpoint holds a block: hash.lo mod the endpoint count.
int RedisShardOf(const BlockHash& hash, int num_endpoints);

// Block bytes in Redis (hiredis 0.14, RESP2): one synchronous connection per endpoint, commands
// pipelined per endpoint (SET / GET / EXISTS / DEL), connected lazily and reconnected after a
// failure. A down or slow endpoint makes its blocks kUnavailable and its Puts fail; it is counted
// in errors() and never fails the caller. Creation does not need Redis to be up.
//
// Redis must run with `maxmemory` set and `maxmemory-policy allkeys-lru`: then a full Redis evicts
// old keys instead of refusing writes, and the service learns of any key Redis dropped when a
// lookup or fetch finds it absent (and forgets it). Give Redis more memory than the service's
// budget so that eviction is normally driven by the service's own LRU and leases.
//
// Ignores SIGPIPE process-wide (hiredis writes with write(2); a closed Redis socket must be an
// error, not a signal that kills the server).
//
// TODO(kvcache): one connection per endpoint serialises concurrent calls to it; use a small pool.
absl::StatusOr<BlockStorePtr> NewRedisBlockStore(RedisStoreOptions options, const Clock* clock);

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_REDIS_BLOCK_STORE_H_
