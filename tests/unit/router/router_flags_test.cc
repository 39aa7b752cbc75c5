#include "router/router_flags.h"

#include "gtest/gtest.h"

namespace moeserve::router {
namespace {

TEST(RouterFlagsTest, ParsesEveryFlag) {
  absl::StatusOr<RouterConfig> c =
      ParseFlags({"--port", "9000", "--prefill=a:1,b:2", "--decode", "b:2,c:3", "--block-tokens",
                  "32", "--retry-attempts=4", "--alpha", "0.5", "--poll-ms", "250"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->port, 9000);
  EXPECT_EQ(c->prefill, (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(c->decode, (std::vector<std::string>{"b:2", "c:3"}));
  EXPECT_EQ(c->relay.prefill.block_tokens, 32);
  EXPECT_EQ(c->relay.retry_attempts, 4);
  EXPECT_DOUBLE_EQ(c->relay.prefill.alpha, 0.5);
  EXPECT_EQ(c->registry.poll_interval, absl::Milliseconds(250));
}

TEST(RouterFlagsTest, RejectsBadInput) {
  EXPECT_EQ(ParseFlags({"--decode", "a:1"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFlags({"--prefill", "a:1"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFlags({"--prefill", "a:1", "--decode", "b:1", "--port", "x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFlags({"--prefill", "a", "--decode", "b:1"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status unknown = ParseFlags({"--prefill", "a:1", "--decode", "b:1", "--bogus", "1"}).status();
  EXPECT_NE(unknown.message().find("bogus"), absl::string_view::npos);
  EXPECT_EQ(ParseFlags({"--prefill"}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moeserve::router
