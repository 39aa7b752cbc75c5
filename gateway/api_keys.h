#ifndef MOESERVE_GATEWAY_API_KEYS_H_
#define MOESERVE_GATEWAY_API_KEYS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "gateway/output_assembler.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

// A tier: the quotas and the scheduling priority its keys get. A limit of 0 is no limit.
struct KeyTier {
  std::string name;
  int64_t requests_per_minute = 0;
  int64_t tokens_per_minute = 0;  // prompt + completion tokens of requests finished in 60 s
  int64_t requests_per_day = 0;   // per UTC day
  int32_t priority = 0;           // the lowest priority value a request may run at (lower first)
};

// Who an authenticated request belongs to. Cheap to copy; `index` names the key in its store.
struct Principal {
  int index = -1;
  std::string name;
  std::string tier;
  int32_t priority = 0;
  bool admin = false;
};

// What a key has used since the gateway started.
struct KeyUsage {
  int64_t requests = 0;      // admitted
  int64_t rate_limited = 0;  // refused with 429
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t reasoning_tokens = 0;
  double cost = 0;  // in the price table's currency
};

// The API keys a gateway accepts (--api-keys FILE), stored as SHA-256 hashes, with per-tier
// quotas and per-key usage. Thread-safe.
//
// File format (JSON, so a Kubernetes Secret mounted as a file works as is; unknown keys are
// rejected so a typo never silently lifts a limit):
//   {"tiers": {"free": {"requests_per_minute": 20, "tokens_per_minute": 40000,
//                       "requests_per_day": 1000, "priority": 10},
//              "pro":  {"priority": 0}},
//    "keys": [{"name": "alice", "sha256": "<64 hex digits of SHA-256(key)>", "tier": "free"},
//             {"name": "ops", "sha256": "...", "tier": "pro", "admin": true}]}
// Every limit and the priority are optional (absent or 0: no limit; priority 0). Names and
// hashes are unique. `admin` keys may read GET /admin/usage.
//
// Quotas: requests per minute over a sliding 60 s window of admitted requests; tokens per minute
// over the prompt + completion tokens of requests that finished in the last 60 s (tokens are
// known only at the end, so one request can overshoot; the next ones wait); requests per UTC day.
class ApiKeyStore {
 public:
  // INVALID_ARGUMENT naming the offending entry. `clock` is not owned and outlives the store.
  static absl::StatusOr<std::unique_ptr<ApiKeyStore>> Parse(absl::string_view json_text,
                                                            const Clock* clock);
  // NOT_FOUND when the file cannot be read; INVALID_ARGUMENT (with the path) when malformed.
  static absl::StatusOr<std::unique_ptr<ApiKeyStore>> LoadFile(const std::string& path,
                                                               const Clock* clock);

  // The lower-case hex SHA-256 of `key` (what the file stores).
  static std::string HashKey(absl::string_view key);

  // The key of an `Authorization: Bearer KEY` header (or gRPC `authorization` metadata).
  // UNAUTHENTICATED, with OpenAI's code invalid_api_key, when it is missing, not a bearer
  // token, or unknown.
  absl::StatusOr<Principal> Authenticate(absl::string_view authorization) const;

  // The principal of the key named `name` (objects such as batches store their owner's name);
  // NOT_FOUND when no key has it (the keys file changed since).
  absl::StatusOr<Principal> Named(absl::string_view name) const;

  // Admits one request against the key's quotas and counts it; RESOURCE_EXHAUSTED with code
  // rate_limit_exceeded and a retry-after (RetryAfterSeconds) when a quota is used up (the
  // refusal is counted in rate_limited, not against the quotas).
  absl::Status Admit(const Principal& principal);

  // A finished request's usage (counts toward tokens per minute from now) and cost.
  void Record(const Principal& principal, const UsageInfo& usage, double cost);

  KeyUsage UsageOf(const Principal& principal) const;
  // The body of GET /admin/usage: {"object":"list","currency":C,"data":[{"name","tier",
  // "key_hash_prefix","requests","rate_limited","prompt_tokens","cached_prompt_tokens",
  // "completion_tokens","reasoning_tokens","cost","requests_today","tokens_last_minute"}]}
  // in the file's key order.
  nlohmann::ordered_json UsageJson(const std::string& currency) const;

  size_t size() const { return keys_.size(); }

 private:
  struct Key {
    std::string name;
    std::string sha256;
    size_t tier = 0;
    bool admin = false;
  };
  // Sliding windows and totals of one key.
  struct State {
    std::deque<absl::Time> minute_requests;
    std::deque<std::pair<absl::Time, int64_t>> minute_tokens;
    int64_t minute_token_sum = 0;
    int64_t day = -1;  // days since the epoch (UTC) of day_requests
    int64_t day_requests = 0;
    KeyUsage usage;
  };

  explicit ApiKeyStore(const Clock* clock) : clock_(clock) {}
  void Expire(State& state, absl::Time now) const;

  const Clock* const clock_;
  std::vector<KeyTier> tiers_;
  std::vector<Key> keys_;
  absl::flat_hash_map<std::string, size_t> by_hash_;
  mutable absl::Mutex mu_;
  mutable std::vector<State> states_ ABSL_GUARDED_BY(mu_);
};

// A 429 (RESOURCE_EXHAUSTED, OpenAI's code rate_limit_exceeded) that tells the client to retry
// after `seconds` (>= 1). The HTTP layer sends it as a Retry-After header.
absl::Status RateLimitedError(absl::string_view message, int64_t seconds);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_API_KEYS_H_
