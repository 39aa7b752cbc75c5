#ifndef MOESERVE_COMMON_REDIS_CLIENT_H_
#define MOESERVE_COMMON_REDIS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

struct redisContext;
struct redisReply;

namespace moeserve {

// The small Redis layer shared by the KV-cache block store (kvcache/redis_block_store.cc) and the
// gateway's Batch API store (gateway/batch_store.cc): hiredis (0.14, RESP2), one synchronous
// connection per endpoint, connected lazily, dropped after a failure and reconnected after a
// backoff.

struct RedisEndpoint {
  std::string host;
  int port = 0;
};

// "host:port[,host:port...]". INVALID_ARGUMENT on an empty list, a missing host or a bad port.
absl::StatusOr<std::vector<RedisEndpoint>> ParseRedisEndpoints(absl::string_view spec);

struct RedisConnectionOptions {
  absl::Duration connect_timeout = absl::Milliseconds(500);
  absl::Duration io_timeout = absl::Seconds(2);
  // After a failure, calls report a failure without trying to reconnect until this much time has
  // passed (so a dead endpoint costs no connect timeout per call). 0: retry on every call.
  absl::Duration reconnect_backoff = absl::Milliseconds(200);
};

struct RedisReplyDeleter {
  void operator()(redisReply* reply) const;
};
// A reply; read its fields with <hiredis/hiredis.h> (type, str, len, integer, element).
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;

// One command's arguments (not owned).
using RedisCommand = std::vector<absl::string_view>;

// One endpoint and its connection. Thread-safe: calls are serialised on the one connection.
// Ignores SIGPIPE process-wide on construction (hiredis writes with write(2); a closed Redis
// socket must be an error, not a signal that kills the server).
class RedisConnection {
 public:
  // `clock` is not owned and outlives the connection.
  RedisConnection(RedisEndpoint endpoint, RedisConnectionOptions options, const Clock* clock);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends `commands` in one pipeline and returns one reply per command; nullptr where the
  // endpoint failed (then the connection is dropped and `*errors` is incremented once).
  // Redis error replies are returned as they are (type REDIS_REPLY_ERROR).
  std::vector<RedisReplyPtr> Pipeline(const std::vector<RedisCommand>& commands, int64_t* errors);

  // One command. UNAVAILABLE when the endpoint cannot be reached, INTERNAL for an error reply
  // (with Redis' text).
  absl::StatusOr<RedisReplyPtr> Run(const RedisCommand& command);

  const RedisEndpoint& endpoint() const { return endpoint_; }

 private:
  bool EnsureConnected() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Disconnect() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RedisEndpoint endpoint_;
  const RedisConnectionOptions options_;
  const Clock* const clock_;
  absl::Mutex mu_;
  redisContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;  // owned; redisFree
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace moeserve

#endif  // MOESERVE_COMMON_REDIS_CLIENT_H_
