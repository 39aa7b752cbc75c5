#include "kvcache/kvcache_flags.h"

#include "gtest/gtest.h"

namespace moeserve::kvcache {
namespace {

TEST(KvCacheFlagsTest, DefaultsToMemoryStore) {
  absl::StatusOr<KvCacheServerConfig> config = ParseFlags({});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->redis.endpoints.empty());
  EXPECT_EQ(config->port, 0);
}

TEST(KvCacheFlagsTest, ParsesEveryFlag) {
  absl::StatusOr<KvCacheServerConfig> config =
      ParseFlags({"--port", "7000", "--redis=10.0.0.1:6379,redis-b:6380", "--budget-mb", "64",
                  "--lease-ttl-ms=1500", "--block-tokens", "32", "--max-block-mb", "8", "--threads",
                  "2", "--host", "127.0.0.1"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->port, 7000);
  ASSERT_EQ(config->redis.endpoints.size(), 2u);
  EXPECT_EQ(config->redis.endpoints[0].host, "10.0.0.1");
  EXPECT_EQ(config->redis.endpoints[0].port, 6379);
  EXPECT_EQ(config->redis.endpoints[1].host, "redis-b");
  EXPECT_EQ(config->redis.endpoints[1].port, 6380);
  EXPECT_EQ(config->cache.budget_bytes, int64_t{64} << 20);
  EXPECT_EQ(config->cache.lease_ttl, absl::Milliseconds(1500));
  EXPECT_EQ(config->cache.block_tokens, 32);
  EXPECT_EQ(config->cache.max_block_bytes, int64_t{8} << 20);
  EXPECT_EQ(config->worker_threads, 2);
  EXPECT_EQ(config->host, "127.0.0.1");
}

TEST(KvCacheFlagsTest, RejectsBadInput) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--bogus", "1"},
                                             {"--port"},
                                             {"--port", "x"},
                                             {"--port", "70000"},
                                             {"--redis", "nohost"},
                                             {"--redis", "h:0"},
                                             {"--redis", "h:1,"},
                                             {"stray"},
                                             {"--budget-mb", "-1"}}) {
    EXPECT_EQ(ParseFlags(args).status().code(), absl::StatusCode::kInvalidArgument)
        << args[0] << (args.size() > 1 ? " " + args[1] : "");
  }
}

}  // namespace
}  // namespace moeserve::kvcache
