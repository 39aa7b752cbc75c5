#include "kvcache/redis_block_store.h"

#include <hiredis/hiredis.h>
#include <signal.h>

#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"

namespace moeserve::kvcache {
namespace {

using ReplyPtr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;
using ContextPtr = std::unique_ptr<redisContext, decltype(&redisFree)>;

// One Redis command: its arguments (not owned).
using Command = std::vector<absl::string_view>;

// One endpoint and its connection.
class RedisShard {
 public:
  RedisShard(RedisEndpoint endpoint, const RedisStoreOptions* options, const Clock* clock)
      : endpoint_(std::move(endpoint)), options_(options), clock_(clock) {}

  // Sends `commands` in one pipeline and returns one reply per command; nullptr where the
  // endpoint failed (then the connection is dropped and `*errors` counts the failure).
  std::vector<ReplyPtr> Pipeline(const std::vector<Command>& commands, int64_t* errors) {
    std::vector<ReplyPtr> replies;
    replies.reserve(commands.size());
    absl::MutexLock lock(&mu_);
    const bool connected = EnsureConnected();
    bool ok = connected;
    for (size_t i = 0; ok && i < commands.size(); ++i) {
      std::vector<const char*> argv;
      std::vector<size_t> argvlen;
      for (absl::string_view arg : commands[i]) {
        argv.push_back(arg.data());
        argvlen.push_back(arg.size());
      }
      ok = redisAppendCommandArgv(ctx_.get(), static_cast<int>(argv.size()), argv.data(),
                                  argvlen.data()) == REDIS_OK;
    }
    for (size_t i = 0; ok && i < commands.size(); ++i) {
      void* raw = nullptr;
      ok = redisGetReply(ctx_.get(), &raw) == REDIS_OK && raw != nullptr;
      if (ok) replies.emplace_back(static_cast<redisReply*>(raw), &freeReplyObject);
    }
    if (!ok) {
      ++*errors;
      // Only a failure on a live connection restarts the backoff. A call refused while backing
      // off must not push the next attempt further out: under steady load (a call every few
      // milliseconds) that kept the store from ever reconnecting after a Redis restart (found by
      // tests/integration/resilience/test_chaos.py).
      if (connected) Disconnect();
    }
    while (replies.size() < commands.size()) replies.emplace_back(nullptr, &freeReplyObject);
    return replies;
  }

 private:
  bool EnsureConnected() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ctx_ != nullptr) return true;
    if (clock_->Now() < next_attempt_) return false;
    ContextPtr ctx(redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port,
                                           absl::ToTimeval(options_->connect_timeout)),
                   &redisFree);
    if (ctx == nullptr || ctx->err != 0) {
      next_attempt_ = clock_->Now() + options_->reconnect_backoff;
      return false;
    }
    if (redisSetTimeout(ctx.get(), absl::ToTimeval(options_->io_timeout)) != REDIS_OK) {
      next_attempt_ = clock_->Now() + options_->reconnect_backoff;
      return false;
    }
    redisEnableKeepAlive(ctx.get());
    ctx_ = std::move(ctx);
    return true;
  }

  void Disconnect() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ctx_.reset();
    next_attempt_ = clock_->Now() + options_->reconnect_backoff;
  }

  const RedisEndpoint endpoint_;
  const RedisStoreOptions* const options_;
  const Clock* const clock_;
  absl::Mutex mu_;
  ContextPtr ctx_ ABSL_GUARDED_BY(mu_){nullptr, &redisFree};
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

class RedisBlockStore final : public BlockStore {
 public:
  RedisBlockStore(RedisStoreOptions options, const Clock* clock) : options_(std::move(options)) {
    for (const RedisEndpoint& endpoint : options_.endpoints) {
      shards_.push_back(std::make_unique<RedisShard>(endpoint, &options_, clock));
    }
  }

  std::vector<absl::Status> Put(absl::Span<const BlockView> blocks) override {
    std::vector<std::string> keys;
    for (const BlockView& b : blocks) keys.push_back(Key(b.hash));
    std::vector<absl::Status> out(blocks.size());
    ForEachShard(
        blocks.size(), [&](size_t i) { return ShardIndex(blocks[i].hash); },
        [&](size_t i) {
          return Command{"SET", keys[i], blocks[i].data};
        },
        [&](size_t i, const redisReply* reply) {
          if (reply != nullptr && reply->type == REDIS_REPLY_STATUS) return;
          out[i] = absl::UnavailableError(reply == nullptr
                                              ? "redis endpoint unavailable"
                                              : absl::StrCat("redis SET: ", ReplyText(reply)));
        });
    return out;
  }

  std::vector<StoredBlock> Get(absl::Span<const BlockHash> hashes) override {
    std::vector<std::string> keys;
    for (const BlockHash& h : hashes) keys.push_back(Key(h));
    std::vector<StoredBlock> out(hashes.size());
    ForEachShard(
        hashes.size(), [&](size_t i) { return ShardIndex(hashes[i]); },
        [&](size_t i) {
          return Command{"GET", keys[i]};
        },
        [&](size_t i, const redisReply* reply) {
          if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) {
            out[i].presence = Presence::kUnavailable;
          } else if (reply->type == REDIS_REPLY_STRING) {
            out[i].presence = Presence::kPresent;
            out[i].data.assign(reply->str, reply->len);
          } else {
            out[i].presence = Presence::kAbsent;  // nil
          }
        });
    return out;
  }

  std::vector<Presence> Contains(absl::Span<const BlockHash> hashes) override {
    std::vector<std::string> keys;
    for (const BlockHash& h : hashes) keys.push_back(Key(h));
    std::vector<Presence> out(hashes.size(), Presence::kUnavailable);
    ForEachShard(
        hashes.size(), [&](size_t i) { return ShardIndex(hashes[i]); },
        [&](size_t i) {
          return Command{"EXISTS", keys[i]};
        },
        [&](size_t i, const redisReply* reply) {
          if (reply != nullptr && reply->type == REDIS_REPLY_INTEGER) {
            out[i] = reply->integer > 0 ? Presence::kPresent : Presence::kAbsent;
          }
        });
    return out;
  }

  void Delete(absl::Span<const BlockHash> hashes) override {
    std::vector<std::string> keys;
    for (const BlockHash& h : hashes) keys.push_back(Key(h));
    ForEachShard(
        hashes.size(), [&](size_t i) { return ShardIndex(hashes[i]); },
        [&](size_t i) {
          return Command{"DEL", keys[i]};
        },
        [](size_t, const redisReply*) {});
  }

  int64_t errors() const override {
    absl::MutexLock lock(&mu_);
    return errors_;
  }

 private:
  std::string Key(const BlockHash& hash) const { return RedisBlockKey(options_.key_prefix, hash); }
  int ShardIndex(const BlockHash& hash) const {
    return RedisShardOf(hash, static_cast<int>(shards_.size()));
  }
  static std::string ReplyText(const redisReply* reply) {
    return reply->str == nullptr ? std::string("(no text)") : std::string(reply->str, reply->len);
  }

  // Groups items 0..n-1 by shard, runs each shard's commands as one pipeline and hands every
  // reply (nullptr when the shard failed) to `on_reply` with the item's index. Redis error replies
  // count as errors too.
  template <typename ShardFn, typename CommandFn, typename ReplyFn>
  void ForEachShard(size_t n, ShardFn shard_of, CommandFn command_of, ReplyFn on_reply) {
    std::vector<std::vector<size_t>> items(shards_.size());
    for (size_t i = 0; i < n; ++i) items[shard_of(i)].push_back(i);
    int64_t errors = 0;
    for (size_t s = 0; s < shards_.size(); ++s) {
      if (items[s].empty()) continue;
      std::vector<Command> commands;
      commands.reserve(items[s].size());
      for (size_t i : items[s]) commands.push_back(command_of(i));
      std::vector<ReplyPtr> replies = shards_[s]->Pipeline(commands, &errors);
      for (size_t k = 0; k < items[s].size(); ++k) {
        if (replies[k] != nullptr && replies[k]->type == REDIS_REPLY_ERROR) ++errors;
        on_reply(items[s][k], replies[k].get());
      }
    }
    if (errors > 0) {
      absl::MutexLock lock(&mu_);
      errors_ += errors;
    }
  }

  const RedisStoreOptions options_;
  std::vector<std::unique_ptr<RedisShard>> shards_;
  mutable absl::Mutex mu_;
  int64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::StatusOr<std::vector<RedisEndpoint>> ParseRedisEndpoints(absl::string_view spec) {
  std::vector<RedisEndpoint> endpoints;
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    const size_t colon = part.rfind(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis endpoint '", part, "' is not host:port"));
    }
    RedisEndpoint endpoint;
    endpoint.host = std::string(part.substr(0, colon));
    if (!absl::SimpleAtoi(part.substr(colon + 1), &endpoint.port) || endpoint.port <= 0 ||
        endpoint.port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("redis endpoint '", part, "' has a bad port"));
    }
    endpoints.push_back(std::move(endpoint));
  }
  return endpoints;
}

std::string RedisBlockKey(absl::string_view key_prefix, const BlockHash& hash) {
  return absl::StrCat(key_prefix, hash.ToHex());
}

int RedisShardOf(const BlockHash& hash, int num_endpoints) {
  return num_endpoints <= 0 ? 0 : static_cast<int>(hash.lo % static_cast<uint64_t>(num_endpoints));
}

absl::StatusOr<BlockStorePtr> NewRedisBlockStore(RedisStoreOptions options, const Clock* clock) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("redis block store needs at least one endpoint");
  }
  signal(SIGPIPE, SIG_IGN);
  return BlockStorePtr(std::make_unique<RedisBlockStore>(std::move(options), clock));
}

}  // namespace moeserve::kvcache
