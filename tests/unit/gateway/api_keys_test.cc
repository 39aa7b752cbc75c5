#include "gateway/api_keys.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace moeserve::gateway {
namespace {

using ::testing::HasSubstr;

// 2023-11-14 22:13:20 UTC: 6400 s before the next UTC midnight.
constexpr int64_t kStart = 1'700'000'000;

std::string File(const std::string& tier_body) {
  return absl::StrCat(R"({"tiers": {"t": )", tier_body, R"(, "top": {"priority": -5}},
      "keys": [{"name": "alice", "sha256": ")", ApiKeyStore::HashKey("sk-alice"),
                      R"(", "tier": "t"},
               {"name": "ops", "sha256": ")", ApiKeyStore::HashKey("sk-ops"),
                      R"(", "tier": "top", "admin": true}]})");
}

class ApiKeysTest : public ::testing::Test {
 protected:
  std::unique_ptr<ApiKeyStore> Make(const std::string& tier_body) {
    absl::StatusOr<std::unique_ptr<ApiKeyStore>> s = ApiKeyStore::Parse(File(tier_body), &clock_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  testing::FakeClock clock_{absl::FromUnixSeconds(kStart)};
};

TEST_F(ApiKeysTest, HashIsSha256Hex) {
  EXPECT_EQ(ApiKeyStore::HashKey("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(ApiKeysTest, AuthenticatesBearerKeysByHash) {
  auto keys = Make("{}");
  absl::StatusOr<Principal> alice = keys->Authenticate("Bearer sk-alice");
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->name, "alice");
  EXPECT_FALSE(alice->admin);
  absl::StatusOr<Principal> ops = keys->Authenticate("bearer  sk-ops ");
  ASSERT_TRUE(ops.ok());
  EXPECT_TRUE(ops->admin);
  EXPECT_EQ(ops->priority, -5);
  for (const char* bad : {"", "Bearer ", "Bearer sk-nobody", "Basic sk-alice", "sk-alice"}) {
    absl::StatusOr<Principal> p = keys->Authenticate(bad);
    EXPECT_TRUE(absl::IsUnauthenticated(p.status())) << bad;
    EXPECT_EQ(HttpStatusCode(p.status().code()), 401);
    EXPECT_THAT(OpenAiErrorBody(p.status()), HasSubstr("\"invalid_api_key\""));
  }
}

TEST_F(ApiKeysTest, NamedFindsTheSamePrincipalAsItsKey) {
  auto keys = Make("{}");
  absl::StatusOr<Principal> by_key = keys->Authenticate("Bearer sk-ops");
  absl::StatusOr<Principal> by_name = keys->Named("ops");
  ASSERT_TRUE(by_key.ok() && by_name.ok());
  EXPECT_EQ(by_name->index, by_key->index);
  EXPECT_EQ(by_name->tier, by_key->tier);
  EXPECT_EQ(by_name->priority, by_key->priority);
  EXPECT_TRUE(by_name->admin);
  EXPECT_TRUE(absl::IsNotFound(keys->Named("mallory").status()));
}

TEST_F(ApiKeysTest, RequestsPerMinuteSlideAndTellWhenToRetry) {
  auto keys = Make(R"({"requests_per_minute": 2})");
  const Principal p = *keys->Authenticate("Bearer sk-alice");
  EXPECT_TRUE(keys->Admit(p).ok());
  clock_.Advance(absl::Seconds(10));
  EXPECT_TRUE(keys->Admit(p).ok());
  clock_.Advance(absl::Seconds(5));
  absl::Status third = keys->Admit(p);
  EXPECT_TRUE(absl::IsResourceExhausted(third));
  EXPECT_EQ(RetryAfterSeconds(third), 45);  // the first request leaves the window at 60 s
  EXPECT_THAT(OpenAiErrorBody(third), HasSubstr("\"rate_limit_exceeded\""));
  EXPECT_THAT(std::string(third.message()), HasSubstr("requests per minute"));
  clock_.Advance(absl::Seconds(45));
  EXPECT_TRUE(keys->Admit(p).ok());
  EXPECT_EQ(keys->UsageOf(p).requests, 3);
  EXPECT_EQ(keys->UsageOf(p).rate_limited, 1);
  // Another key has its own window.
  EXPECT_TRUE(keys->Admit(*keys->Authenticate("Bearer sk-ops")).ok());
}

TEST_F(ApiKeysTest, TokensPerMinuteCountFinishedRequests) {
  auto keys = Make(R"({"tokens_per_minute": 100})");
  const Principal p = *keys->Authenticate("Bearer sk-alice");
  ASSERT_TRUE(keys->Admit(p).ok());
  keys->Record(p, UsageInfo{30, 40, 10, 8}, 0.5);
  clock_.Advance(absl::Seconds(20));
  ASSERT_TRUE(keys->Admit(p).ok());  // 70 < 100
  keys->Record(p, UsageInfo{30, 10, 0, 0}, 0.25);
  clock_.Advance(absl::Seconds(1));
  absl::Status s = keys->Admit(p);
  ASSERT_TRUE(absl::IsResourceExhausted(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokens per minute"));
  EXPECT_EQ(RetryAfterSeconds(s), 39);  // the first 70 tokens leave at 60 s
  clock_.Advance(absl::Seconds(39));
  EXPECT_TRUE(keys->Admit(p).ok());
  const KeyUsage u = keys->UsageOf(p);
  EXPECT_EQ(u.prompt_tokens, 60);
  EXPECT_EQ(u.cached_prompt_tokens, 8);
  EXPECT_EQ(u.completion_tokens, 50);
  EXPECT_EQ(u.reasoning_tokens, 10);
  EXPECT_DOUBLE_EQ(u.cost, 0.75);
}

TEST_F(ApiKeysTest, RequestsPerDayResetAtUtcMidnight) {
  auto keys = Make(R"({"requests_per_day": 1})");
  const Principal p = *keys->Authenticate("Bearer sk-alice");
  ASSERT_TRUE(keys->Admit(p).ok());
  absl::Status s = keys->Admit(p);
  ASSERT_TRUE(absl::IsResourceExhausted(s));
  EXPECT_EQ(RetryAfterSeconds(s), 86400 - kStart % 86400);
  clock_.Advance(absl::Seconds(86400 - kStart % 86400));
  EXPECT_TRUE(keys->Admit(p).ok());
}

TEST_F(ApiKeysTest, UsageJsonListsEveryKeyInFileOrder) {
  auto keys = Make("{}");
  const Principal p = *keys->Authenticate("Bearer sk-alice");
  ASSERT_TRUE(keys->Admit(p).ok());
  keys->Record(p, UsageInfo{5, 7, 2, 1}, 0.125);
  const nlohmann::ordered_json j = keys->UsageJson("EUR");
  EXPECT_EQ(j["currency"], "EUR");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["name"], "alice");
  EXPECT_EQ(j["data"][0]["requests"], 1);
  EXPECT_EQ(j["data"][0]["prompt_tokens"], 5);
  EXPECT_EQ(j["data"][0]["completion_tokens"], 7);
  EXPECT_EQ(j["data"][0]["tokens_last_minute"], 12);
  EXPECT_DOUBLE_EQ(j["data"][0]["cost"].get<double>(), 0.125);
  EXPECT_EQ(j["data"][0]["key_hash_prefix"],
            "sha256:" + ApiKeyStore::HashKey("sk-alice").substr(0, 16));
  EXPECT_EQ(j["data"][1]["name"], "ops");
  EXPECT_EQ(j["data"][1]["requests"], 0);
}

TEST_F(ApiKeysTest, RejectsBadFilesNamingTheEntry) {
  const std::string hash = ApiKeyStore::HashKey("k");
  const struct {
    std::string text, want;
  } cases[] = {
      {"not json", "not a JSON object"},
      {R"({"tiers": {}, "keys": []})", "tiers"},
      {R"({"tiers": {"t": {"requests_per_minit": 3}}, "keys": []})", "requests_per_minit"},
      {R"({"tiers": {"t": {"requests_per_minute": -1}}, "keys": []})", "requests_per_minute"},
      {R"({"tiers": {"t": {"priority": 5000}}, "keys": []})", "priority"},
      {R"({"tiers": {"t": {}}, "keys": [{"name": "a", "sha256": "xyz", "tier": "t"}]})",
       "keys[0]"},
      {absl::StrCat(R"({"tiers": {"t": {}}, "keys": [{"name": "a", "sha256": ")", hash,
                    R"(", "tier": "u"}]})"),
       "'tier'"},
      {absl::StrCat(R"({"tiers": {"t": {}}, "keys": [{"name": "a", "sha256": ")", hash,
                    R"(", "tier": "t"}, {"name": "b", "sha256": ")", hash,
                    R"(", "tier": "t"}]})"),
       "keys[1]"},
      {absl::StrCat(R"({"tiers": {"t": {}}, "keys": [{"name": "a", "sha256": ")", hash,
                    R"(", "tier": "t", "admin": "yes"}]})"),
       "admin"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<std::unique_ptr<ApiKeyStore>> s = ApiKeyStore::Parse(c.text, &clock_);
    EXPECT_TRUE(absl::IsInvalidArgument(s.status())) << c.text;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(c.want)) << c.text;
  }
  EXPECT_TRUE(absl::IsNotFound(ApiKeyStore::LoadFile("/nonexistent/keys.json", &clock_).status()));
}

}  // namespace
}  // namespace moeserve::gateway
