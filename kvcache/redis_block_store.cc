#include "kvcache/redis_block_store.h"

#include <hiredis/hiredis.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace moeserve::kvcache {
namespace {

using ReplyPtr = RedisReplyPtr;
using Command = RedisCommand;

RedisConnectionOptions ConnectionOptions(const RedisStoreOptions& options) {
  RedisConnectionOptions out;
  out.connect_timeout = options.connect_timeout;
  out.io_timeout = options.io_timeout;
  out.reconnect_backoff = options.reconnect_backoff;
  return out;
}

class RedisBlockStore final : public BlockStore {
 public:
  RedisBlockStore(RedisStoreOptions options, const Clock* clock) : options_(std::move(options)) {
    for (const RedisEndpoint& endpoint : options_.endpoints) {
      shards_.push_back(
          std::make_unique<RedisConnection>(endpoint, ConnectionOptions(options_), clock));
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
  std::vector<std::unique_ptr<RedisConnection>> shards_;
  mutable absl::Mutex mu_;
  int64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

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
  return BlockStorePtr(std::make_unique<RedisBlockStore>(std::move(options), clock));
}

}  // namespace moeserve::kvcache
