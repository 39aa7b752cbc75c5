#include "gateway/batch_store.h"

#include <hiredis/hiredis.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace moeserve::gateway {
namespace {

class MemoryBatchStore final : public BatchStore {
 public:
  absl::Status Set(absl::string_view key, absl::string_view value) override {
    absl::MutexLock lock(&mu_);
    values_[std::string(key)] = std::string(value);
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    absl::MutexLock lock(&mu_);
    auto it = values_.find(std::string(key));
    if (it == values_.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }
  absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) override {
    absl::MutexLock lock(&mu_);
    std::vector<std::optional<std::string>> out;
    for (const std::string& key : keys) {
      auto it = values_.find(key);
      out.push_back(it == values_.end() ? std::nullopt : std::optional<std::string>(it->second));
    }
    return out;
  }
  absl::Status Delete(absl::string_view key) override {
    absl::MutexLock lock(&mu_);
    values_.erase(std::string(key));
    hashes_.erase(std::string(key));
    return absl::OkStatus();
  }
  absl::Status HashSet(absl::string_view key, absl::string_view field,
                       absl::string_view value) override {
    absl::MutexLock lock(&mu_);
    hashes_[std::string(key)][std::string(field)] = std::string(value);
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<std::string, std::string>> HashGetAll(absl::string_view key) override {
    absl::MutexLock lock(&mu_);
    auto it = hashes_.find(std::string(key));
    if (it == hashes_.end()) return std::map<std::string, std::string>();
    return it->second;
  }
  absl::Status SetAdd(absl::string_view key, absl::string_view member) override {
    absl::MutexLock lock(&mu_);
    sets_[std::string(key)].insert(std::string(member));
    return absl::OkStatus();
  }
  absl::Status SetRemove(absl::string_view key, absl::string_view member) override {
    absl::MutexLock lock(&mu_);
    sets_[std::string(key)].erase(std::string(member));
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::string>> SetMembers(absl::string_view key) override {
    absl::MutexLock lock(&mu_);
    const std::set<std::string>& s = sets_[std::string(key)];
    return std::vector<std::string>(s.begin(), s.end());
  }
  std::string Describe() const override { return "memory"; }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::string>> hashes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<std::string>> sets_ ABSL_GUARDED_BY(mu_);
};

class RedisBatchStore final : public BatchStore {
 public:
  RedisBatchStore(RedisEndpoint endpoint, const Clock* clock)
      : redis_(std::move(endpoint), RedisConnectionOptions{}, clock) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    return redis_.Run({"SET", key, value}).status();
  }
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    absl::StatusOr<RedisReplyPtr> r = redis_.Run({"GET", key});
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_NIL) return std::optional<std::string>();
    if ((*r)->type != REDIS_REPLY_STRING) return Unexpected("GET");
    return std::optional<std::string>(std::string((*r)->str, (*r)->len));
  }
  absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out;
    if (keys.empty()) return out;
    RedisCommand command = {"MGET"};
    for (const std::string& key : keys) command.push_back(key);
    absl::StatusOr<RedisReplyPtr> r = redis_.Run(command);
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_ARRAY || (*r)->elements != keys.size()) return Unexpected("MGET");
    for (size_t i = 0; i < keys.size(); ++i) {
      const redisReply* e = (*r)->element[i];
      out.push_back(e->type == REDIS_REPLY_STRING
                        ? std::optional<std::string>(std::string(e->str, e->len))
                        : std::nullopt);
    }
    return out;
  }
  absl::Status Delete(absl::string_view key) override { return redis_.Run({"DEL", key}).status(); }
  absl::Status HashSet(absl::string_view key, absl::string_view field,
                       absl::string_view value) override {
    return redis_.Run({"HSET", key, field, value}).status();
  }
  absl::StatusOr<std::map<std::string, std::string>> HashGetAll(absl::string_view key) override {
    absl::StatusOr<RedisReplyPtr> r = redis_.Run({"HGETALL", key});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_ARRAY || (*r)->elements % 2 != 0) return Unexpected("HGETALL");
    std::map<std::string, std::string> out;
    for (size_t i = 0; i + 1 < (*r)->elements; i += 2) {
      const redisReply* f = (*r)->element[i];
      const redisReply* v = (*r)->element[i + 1];
      if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
        return Unexpected("HGETALL");
      }
      out[std::string(f->str, f->len)] = std::string(v->str, v->len);
    }
    return out;
  }
  absl::Status SetAdd(absl::string_view key, absl::string_view member) override {
    return redis_.Run({"SADD", key, member}).status();
  }
  absl::Status SetRemove(absl::string_view key, absl::string_view member) override {
    return redis_.Run({"SREM", key, member}).status();
  }
  absl::StatusOr<std::vector<std::string>> SetMembers(absl::string_view key) override {
    absl::StatusOr<RedisReplyPtr> r = redis_.Run({"SMEMBERS", key});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_ARRAY) return Unexpected("SMEMBERS");
    std::vector<std::string> out;
    for (size_t i = 0; i < (*r)->elements; ++i) {
      const redisReply* e = (*r)->element[i];
      if (e->type == REDIS_REPLY_STRING) out.emplace_back(e->str, e->len);
    }
    return out;
  }
  std::string Describe() const override {
    return absl::StrCat("redis ", redis_.endpoint().host, ":", redis_.endpoint().port);
  }

 private:
  static absl::Status Unexpected(absl::string_view command) {
    return absl::InternalError(absl::StrCat("redis ", command, ": unexpected reply type"));
  }

  RedisConnection redis_;
};

}  // namespace

BatchStorePtr NewMemoryBatchStore() { return std::make_unique<MemoryBatchStore>(); }

BatchStorePtr NewRedisBatchStore(RedisEndpoint endpoint, const Clock* clock) {
  return std::make_unique<RedisBatchStore>(std::move(endpoint), clock);
}

}  // namespace moeserve::gateway
