#include "common/http_status.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

TEST(HttpStatusTest, MapsCodes) {
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kCancelled), 499);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kInternal), 500);
  EXPECT_EQ(HttpStatusCode(absl::StatusCode::kFailedPrecondition), 500);
}

TEST(HttpStatusTest, OpenAiErrorBody) {
  absl::Status s = WithErrorCode(
      WithErrorParam(absl::InvalidArgumentError("bad \xff temperature"), "temperature"),
      "invalid_value");
  nlohmann::json j = nlohmann::json::parse(OpenAiErrorBody(s), nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_TRUE(absl::StartsWith(j["error"]["message"].get<std::string>(), "bad "));
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_EQ(j["error"]["code"], "invalid_value");
  j = nlohmann::json::parse(OpenAiErrorBody(absl::UnavailableError("down")), nullptr, false);
  EXPECT_EQ(j["error"]["type"], "server_error");
  EXPECT_TRUE(j["error"]["param"].is_null());
  EXPECT_TRUE(j["error"]["code"].is_null());
  j = nlohmann::json::parse(OpenAiErrorBody(absl::InvalidArgumentError("x"), 413), nullptr, false);
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
}

}  // namespace
}  // namespace moeserve
