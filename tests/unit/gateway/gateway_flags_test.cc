#include "gateway/gateway_flags.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace moeserve::gateway {
namespace {

TEST(GatewayFlagsTest, ParsesEveryFlag) {
  absl::StatusOr<GatewayConfig> c =
      ParseFlags({"--model", "/m/DeepSeek-R1", "--model-name=r1", "--port", "8000",
                  "--grpc-port=9000", "--router", "router:7000", "--max-tokens-default", "512",
                  "--http-threads", "4", "--host", "127.0.0.1", "--router-timeout-s", "30",
                  "--price-table", "/etc/moeserve/prices.json"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_dir, "/m/DeepSeek-R1");
  EXPECT_EQ(c->model_name, "r1");
  EXPECT_EQ(c->http_port, 8000);
  EXPECT_EQ(c->grpc_port, 9000);
  EXPECT_EQ(c->router_address, "router:7000");
  EXPECT_EQ(c->max_tokens_default, 512);
  EXPECT_EQ(c->http_threads, 4);
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->router_timeout, absl::Seconds(30));
  EXPECT_FALSE(c->reject_reasoner_logprobs);
  EXPECT_EQ(c->price_table_file, "/etc/moeserve/prices.json");
}

TEST(GatewayFlagsTest, RejectLogprobsForReasonerIsASwitch) {
  absl::StatusOr<GatewayConfig> c = ParseFlags(
      {"--model", "m", "--reject-logprobs-for-reasoner", "--router", "r:1", "--port", "5"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->reject_reasoner_logprobs);
  EXPECT_EQ(c->router_address, "r:1");  // the switch took no value
  c = ParseFlags({"--model", "m", "--router", "r:1", "--reject-logprobs-for-reasoner=true",
                  "--reject-logprobs-for-reasoner=false"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->reject_reasoner_logprobs);
  EXPECT_FALSE(
      ParseFlags({"--model", "m", "--router", "r:1", "--reject-logprobs-for-reasoner=maybe"}).ok());
}

TEST(GatewayFlagsTest, ApiKeysAndKeepAlive) {
  absl::StatusOr<GatewayConfig> c = ParseFlags({"--model", "m", "--router", "r:1", "--api-keys",
                                                "/etc/moeserve/keys.json", "--sse-keepalive-s",
                                                "0.25"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->api_keys_file, "/etc/moeserve/keys.json");
  EXPECT_EQ(c->sse_keepalive, absl::Milliseconds(250));
  c = ParseFlags({"--model", "m", "--router", "r:1"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->api_keys_file.empty());
  EXPECT_EQ(c->sse_keepalive, absl::Seconds(10));
}

TEST(GatewayFlagsTest, StreamResume) {
  absl::StatusOr<GatewayConfig> c = ParseFlags({"--model", "m", "--router", "r:1"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream_resume.grace, absl::Seconds(30));
  EXPECT_EQ(c->stream_resume.max_stream_bytes, size_t{4} << 20);
  EXPECT_EQ(c->stream_resume.max_detached, 256u);
  c = ParseFlags({"--model", "m", "--router", "r:1", "--stream-resume-grace-s", "2.5",
                  "--stream-resume-max-bytes=65536", "--stream-resume-max-detached", "3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream_resume.grace, absl::Milliseconds(2500));
  EXPECT_EQ(c->stream_resume.max_stream_bytes, 65536u);
  EXPECT_EQ(c->stream_resume.max_detached, 3u);
  c = ParseFlags({"--model", "m", "--router", "r:1", "--stream-resume-grace-s", "0"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream_resume.grace, absl::ZeroDuration());  // resuming off
}

TEST(GatewayFlagsTest, BatchApi) {
  absl::StatusOr<GatewayConfig> c = ParseFlags({"--model", "m", "--router", "r:1"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->redis.has_value());  // in memory
  EXPECT_EQ(c->batch.concurrency, 2);
  EXPECT_EQ(c->batch.priority, kMaxPriority);
  c = ParseFlags({"--model", "m", "--router", "r:1", "--redis", "127.0.0.1:6380",
                  "--batch-concurrency", "4", "--batch-priority=-5", "--batch-max-file-mb", "2",
                  "--batch-max-requests", "10"});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->redis.has_value());
  EXPECT_EQ(c->redis->host, "127.0.0.1");
  EXPECT_EQ(c->redis->port, 6380);
  EXPECT_EQ(c->batch.concurrency, 4);
  EXPECT_EQ(c->batch.priority, -5);
  EXPECT_EQ(c->batch.max_file_bytes, size_t{2} << 20);
  EXPECT_EQ(c->batch.max_requests, 10u);
  for (const std::vector<std::string>& bad :
       std::vector<std::vector<std::string>>{{"--redis", "nohost"},
                                             {"--redis", "a:1,b:2"},
                                             {"--redis", "h:99999"},
                                             {"--batch-concurrency", "0"},
                                             {"--batch-concurrency", "two"},
                                             {"--batch-priority", "1001"},
                                             {"--batch-max-file-mb", "-1"}}) {
    std::vector<std::string> args = {"--model", "m", "--router", "r:1"};
    args.insert(args.end(), bad.begin(), bad.end());
    EXPECT_FALSE(ParseFlags(args).ok()) << bad[0] << " " << bad[1];
  }
}

TEST(GatewayFlagsTest, RejectsBadFlags) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--router", "r:1"}, "--model"},
      {{"--model", "m"}, "--router"},
      {{"--model", "m", "--router", "r:1", "--port", "70000"}, "--port"},
      {{"--model", "m", "--router", "r:1", "--port", "x"}, "--port"},
      {{"--model", "m", "--router", "r:1", "--colour", "red"}, "unknown flag --colour"},
      {{"model"}, "unexpected argument"},
      {{"--model"}, "needs a value"},
      {{"--model", "m", "--router", "r:1", "--sse-keepalive-s", "-1"}, "--sse-keepalive-s"},
      {{"--model", "m", "--router", "r:1", "--sse-keepalive-s", "soon"}, "--sse-keepalive-s"},
      {{"--model", "m", "--router", "r:1", "--api-keys="}, "--api-keys"},
      {{"--model", "m", "--router", "r:1", "--stream-resume-grace-s", "-1"},
       "--stream-resume-grace-s"},
      {{"--model", "m", "--router", "r:1", "--stream-resume-grace-s", "4000"},
       "--stream-resume-grace-s"},
      {{"--model", "m", "--router", "r:1", "--stream-resume-grace-s", "nan"},
       "--stream-resume-grace-s"},
      {{"--model", "m", "--router", "r:1", "--stream-resume-max-bytes", "0"},
       "--stream-resume-max-bytes"},
      {{"--model", "m", "--router", "r:1", "--stream-resume-max-detached", "many"},
       "--stream-resume-max-detached"},
  };
  for (const auto& [args, message] : cases) {
    absl::StatusOr<GatewayConfig> c = ParseFlags(args);
    ASSERT_FALSE(c.ok()) << message;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(c.status().message(), message)) << c.status();
  }
}

}  // namespace
}  // namespace moeserve::gateway
