#ifndef MOESERVE_GATEWAY_BATCH_STORE_H_
#define MOESERVE_GATEWAY_BATCH_STORE_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/redis_client.h"

namespace moeserve::gateway {

// Where the Batch API keeps its files, batches and per-request results: a few key-value
// operations, in Redis (durable across gateway restarts) or in memory (tests, and a gateway
// without --redis). Thread-safe. Every method returns UNAVAILABLE when the store cannot be
// reached and INTERNAL for an unexpected reply.
class BatchStore {
 public:
  virtual ~BatchStore() = default;
  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;
  // nullopt when the key does not exist.
  virtual absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) = 0;
  // One value per key, nullopt for a missing one.
  virtual absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) = 0;
  virtual absl::Status Delete(absl::string_view key) = 0;
  // A hash (field -> value): per-request results of a batch.
  virtual absl::Status HashSet(absl::string_view key, absl::string_view field,
                               absl::string_view value) = 0;
  virtual absl::StatusOr<std::map<std::string, std::string>> HashGetAll(absl::string_view key) = 0;
  // A set of members: the index of files and batches.
  virtual absl::Status SetAdd(absl::string_view key, absl::string_view member) = 0;
  virtual absl::Status SetRemove(absl::string_view key, absl::string_view member) = 0;
  virtual absl::StatusOr<std::vector<std::string>> SetMembers(absl::string_view key) = 0;
  // What the store is, for logs ("redis 127.0.0.1:6379", "memory").
  virtual std::string Describe() const = 0;
};
using BatchStorePtr = std::unique_ptr<BatchStore>;

// A store in process memory: lost with the process.
BatchStorePtr NewMemoryBatchStore();

// A store in Redis at `endpoint` (one connection; calls are serialised on it). Creation does not
// need Redis to be up. `clock` is not owned and outlives the store. The Redis instance should
// run with `maxmemory-policy noeviction` (an evicted batch would be lost) and persistence on,
// as `moeserve up` starts it.
BatchStorePtr NewRedisBatchStore(RedisEndpoint endpoint, const Clock* clock);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_BATCH_STORE_H_
