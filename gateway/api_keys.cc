#include "gateway/api_keys.h"

#include <openssl/sha.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "common/status_macros.h"

namespace moeserve::gateway {
namespace {

using Json = nlohmann::json;

constexpr absl::Duration kMinute = absl::Seconds(60);

absl::Status Bad(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("api keys: ", where, ": ", what));
}

absl::Status CheckKeys(const Json& object, absl::string_view where,
                       std::initializer_list<const char*> allowed) {
  for (const auto& item : object.items()) {
    // Not a structured binding: clang 14 (the fuzz preset) cannot capture one in a lambda.
    const std::string& k = item.key();
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return k == a; })) {
      return Bad(where, absl::StrCat("unknown key '", k, "'"));
    }
  }
  return absl::OkStatus();
}

// A limit or priority: an integer in [lo, hi], absent = 0.
absl::StatusOr<int64_t> IntField(const Json& object, const char* name, absl::string_view where,
                                 int64_t lo, int64_t hi) {
  if (!object.contains(name)) return 0;
  const Json& v = object[name];
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
    return Bad(where, absl::StrCat("'", name, "' must be an integer in [", lo, ", ", hi, "]"));
  }
  return v.get<int64_t>();
}

bool IsLowerHex64(absl::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

int64_t SecondsUntil(absl::Time when, absl::Time now) {
  const int64_t s = absl::ToInt64Seconds(absl::Ceil(when - now, absl::Seconds(1)));
  return std::max<int64_t>(s, 1);
}

absl::Status Unauthenticated(absl::string_view message) {
  return WithErrorCode(absl::UnauthenticatedError(message), "invalid_api_key");
}

}  // namespace

absl::Status RateLimitedError(absl::string_view message, int64_t seconds) {
  return WithRetryAfter(
      WithErrorCode(absl::ResourceExhaustedError(message), "rate_limit_exceeded"),
      static_cast<int>(std::clamp<int64_t>(seconds, 1, 86400)));
}

std::string ApiKeyStore::HashKey(absl::string_view key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

absl::StatusOr<std::unique_ptr<ApiKeyStore>> ApiKeyStore::Parse(absl::string_view json_text,
                                                                const Clock* clock) {
  const Json j = Json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Bad("file", "not a JSON object");
  MOESERVE_RETURN_IF_ERROR(CheckKeys(j, "file", {"tiers", "keys"}));
  if (!j.contains("tiers") || !j["tiers"].is_object() || j["tiers"].empty()) {
    return Bad("tiers", "an object with at least one tier is required");
  }
  if (!j.contains("keys") || !j["keys"].is_array()) return Bad("keys", "an array is required");
  std::unique_ptr<ApiKeyStore> store(new ApiKeyStore(clock));
  absl::flat_hash_map<std::string, size_t> tier_index;
  for (const auto& [name, t] : j["tiers"].items()) {
    const std::string where = absl::StrCat("tiers.", name);
    if (!t.is_object()) return Bad(where, "must be an object");
    MOESERVE_RETURN_IF_ERROR(CheckKeys(
        t, where, {"requests_per_minute", "tokens_per_minute", "requests_per_day", "priority"}));
    KeyTier tier;
    tier.name = name;
    constexpr int64_t kMax = int64_t{1} << 40;
    MOESERVE_ASSIGN_OR_RETURN(tier.requests_per_minute,
                              IntField(t, "requests_per_minute", where, 0, kMax));
    MOESERVE_ASSIGN_OR_RETURN(tier.tokens_per_minute,
                              IntField(t, "tokens_per_minute", where, 0, kMax));
    MOESERVE_ASSIGN_OR_RETURN(tier.requests_per_day, IntField(t, "requests_per_day", where, 0, kMax));
    MOESERVE_ASSIGN_OR_RETURN(int64_t priority, IntField(t, "priority", where, -1000, 1000));
    tier.priority = static_cast<int32_t>(priority);
    tier_index[name] = store->tiers_.size();
    store->tiers_.push_back(std::move(tier));
  }
  absl::flat_hash_set<std::string> names;
  for (size_t i = 0; i < j["keys"].size(); ++i) {
    const Json& k = j["keys"][i];
    const std::string where = absl::StrCat("keys[", i, "]");
    if (!k.is_object()) return Bad(where, "must be an object");
    MOESERVE_RETURN_IF_ERROR(CheckKeys(k, where, {"name", "sha256", "tier", "admin"}));
    Key key;
    if (!k.contains("name") || !k["name"].is_string() || k["name"].get<std::string>().empty()) {
      return Bad(where, "'name' must be a non-empty string");
    }
    key.name = k["name"].get<std::string>();
    if (!names.insert(key.name).second) return Bad(where, absl::StrCat("duplicate name '", key.name, "'"));
    if (!k.contains("sha256") || !k["sha256"].is_string() ||
        !IsLowerHex64(k["sha256"].get<std::string>())) {
      return Bad(where,
                 "'sha256' must be 64 lower-case hex digits (moeserve keys hash prints them)");
    }
    key.sha256 = k["sha256"].get<std::string>();
    if (!k.contains("tier") || !k["tier"].is_string() ||
        !tier_index.contains(k["tier"].get<std::string>())) {
      return Bad(where, "'tier' must name a tier of 'tiers'");
    }
    key.tier = tier_index[k["tier"].get<std::string>()];
    if (k.contains("admin")) {
      if (!k["admin"].is_boolean()) return Bad(where, "'admin' must be true or false");
      key.admin = k["admin"].get<bool>();
    }
    if (!store->by_hash_.emplace(key.sha256, store->keys_.size()).second) {
      return Bad(where, "the same key (sha256) is listed twice");
    }
    store->keys_.push_back(std::move(key));
  }
  absl::MutexLock lock(&store->mu_);
  store->states_.resize(store->keys_.size());
  return store;
}

absl::StatusOr<std::unique_ptr<ApiKeyStore>> ApiKeyStore::LoadFile(const std::string& path,
                                                                   const Clock* clock) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the API keys file ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::unique_ptr<ApiKeyStore>> store = Parse(text.str(), clock);
  if (!store.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", store.status().message()));
  }
  return store;
}

absl::StatusOr<Principal> ApiKeyStore::Authenticate(absl::string_view authorization) const {
  absl::string_view value = absl::StripAsciiWhitespace(authorization);
  if (value.empty()) {
    return Unauthenticated(
        "You didn't provide an API key. Send it in the Authorization header as 'Bearer KEY'.");
  }
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    return Unauthenticated("The Authorization header must be 'Bearer KEY'.");
  }
  const absl::string_view token = absl::StripAsciiWhitespace(value.substr(7));
  // Only hashes are compared, so neither the lookup's timing nor a log reveals a key.
  const auto it = by_hash_.find(HashKey(token));
  if (token.empty() || it == by_hash_.end()) return Unauthenticated("Incorrect API key provided.");
  const Key& key = keys_[it->second];
  const KeyTier& tier = tiers_[key.tier];
  return Principal{static_cast<int>(it->second), key.name, tier.name, tier.priority, key.admin};
}

absl::StatusOr<Principal> ApiKeyStore::Named(absl::string_view name) const {
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i].name != name) continue;
    const KeyTier& tier = tiers_[keys_[i].tier];
    return Principal{static_cast<int>(i), keys_[i].name, tier.name, tier.priority, keys_[i].admin};
  }
  return absl::NotFoundError(absl::StrCat("no API key is named '", name, "'"));
}

void ApiKeyStore::Expire(State& s, absl::Time now) const {
  while (!s.minute_requests.empty() && s.minute_requests.front() + kMinute <= now) {
    s.minute_requests.pop_front();
  }
  while (!s.minute_tokens.empty() && s.minute_tokens.front().first + kMinute <= now) {
    s.minute_token_sum -= s.minute_tokens.front().second;
    s.minute_tokens.pop_front();
  }
  const int64_t day = absl::ToUnixSeconds(now) / 86400;
  if (day != s.day) {
    s.day = day;
    s.day_requests = 0;
  }
}

absl::Status ApiKeyStore::Admit(const Principal& p) {
  const absl::Time now = clock_->Now();
  const Key& key = keys_[p.index];
  const KeyTier& tier = tiers_[key.tier];
  absl::MutexLock lock(&mu_);
  State& s = states_[p.index];
  Expire(s, now);
  int64_t retry = 0;
  std::string what;
  auto deny = [&](absl::string_view quota, int64_t limit, int64_t used, int64_t seconds) {
    if (seconds <= retry) return;
    retry = seconds;
    what = absl::StrCat(quota, ": limit ", limit, ", used ", used);
  };
  if (tier.requests_per_minute > 0 &&
      static_cast<int64_t>(s.minute_requests.size()) >= tier.requests_per_minute) {
    // Free once enough of the oldest requests leave the window.
    const size_t excess = s.minute_requests.size() - tier.requests_per_minute;
    deny("requests per minute (RPM)", tier.requests_per_minute,
         static_cast<int64_t>(s.minute_requests.size()),
         SecondsUntil(s.minute_requests[excess] + kMinute, now));
  }
  if (tier.tokens_per_minute > 0 && s.minute_token_sum >= tier.tokens_per_minute) {
    int64_t sum = s.minute_token_sum;
    absl::Time free_at = now;
    for (const auto& [at, tokens] : s.minute_tokens) {
      sum -= tokens;
      free_at = at + kMinute;
      if (sum < tier.tokens_per_minute) break;
    }
    deny("tokens per minute (TPM)", tier.tokens_per_minute, s.minute_token_sum,
         SecondsUntil(free_at, now));
  }
  if (tier.requests_per_day > 0 && s.day_requests >= tier.requests_per_day) {
    deny("requests per day (RPD)", tier.requests_per_day, s.day_requests,
         SecondsUntil(absl::FromUnixSeconds((s.day + 1) * 86400), now));
  }
  if (retry > 0) {
    ++s.usage.rate_limited;
    return RateLimitedError(absl::StrCat("Rate limit reached for API key '", key.name,
                                         "' (tier ", tier.name, ") on ", what,
                                         ". Please try again in ", retry, "s."),
                            retry);
  }
  s.minute_requests.push_back(now);
  ++s.day_requests;
  ++s.usage.requests;
  return absl::OkStatus();
}

void ApiKeyStore::Record(const Principal& p, const UsageInfo& usage, double cost) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  State& s = states_[p.index];
  Expire(s, now);
  const int64_t tokens = int64_t{usage.prompt_tokens} + usage.completion_tokens;
  if (tokens > 0) {
    s.minute_tokens.emplace_back(now, tokens);
    s.minute_token_sum += tokens;
  }
  s.usage.prompt_tokens += usage.prompt_tokens;
  s.usage.cached_prompt_tokens += usage.cached_tokens;
  s.usage.completion_tokens += usage.completion_tokens;
  s.usage.reasoning_tokens += usage.reasoning_tokens;
  s.usage.cost += cost;
}

KeyUsage ApiKeyStore::UsageOf(const Principal& p) const {
  absl::MutexLock lock(&mu_);
  return states_[p.index].usage;
}

nlohmann::ordered_json ApiKeyStore::UsageJson(const std::string& currency) const {
  const absl::Time now = clock_->Now();
  nlohmann::ordered_json data = nlohmann::ordered_json::array();
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < keys_.size(); ++i) {
    State& s = states_[i];  // expiring old entries changes no total
    Expire(s, now);
    const KeyUsage& u = s.usage;
    nlohmann::ordered_json row;
    row["name"] = keys_[i].name;
    row["tier"] = tiers_[keys_[i].tier].name;
    row["key_hash_prefix"] = absl::StrCat("sha256:", keys_[i].sha256.substr(0, 16));
    row["requests"] = u.requests;
    row["rate_limited"] = u.rate_limited;
    row["prompt_tokens"] = u.prompt_tokens;
    row["cached_prompt_tokens"] = u.cached_prompt_tokens;
    row["completion_tokens"] = u.completion_tokens;
    row["reasoning_tokens"] = u.reasoning_tokens;
    row["cost"] = u.cost;
    row["requests_today"] = s.day_requests;
    row["tokens_last_minute"] = s.minute_token_sum;
    data.push_back(std::move(row));
  }
  nlohmann::ordered_json out;
  out["object"] = "list";
  out["currency"] = currency;
  out["data"] = std::move(data);
  return out;
}

}  // namespace moeserve::gateway
