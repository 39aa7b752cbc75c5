#include "expert-shard/flags.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve::expert_shard {
namespace {

absl::StatusOr<ShardConfig> Parse(std::vector<std::string> args, const std::string& hostname) {
  args.insert(args.begin(), "moeserve-expert-shard");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseFlags(static_cast<int>(argv.size()), argv.data(), hostname);
}

TEST(ShardIdFromHostnameTest, ReadsTheTrailingOrdinal) {
  EXPECT_EQ(*ShardIdFromHostname("expert-shard-0"), 0);
  EXPECT_EQ(*ShardIdFromHostname("expert-shard-12"), 12);
  EXPECT_EQ(*ShardIdFromHostname("gpu-ep-expert-shard-3.expert-shard.ns.svc.cluster.local"), 3);
}

TEST(ShardIdFromHostnameTest, RejectsNamesWithoutAnOrdinal) {
  for (const char* host : {"", "expert-shard", "expert-shard-", "expert-shard-x1", "shard-1a",
                           "expert-shard.ns-3", "-", "expert-shard-99999999999"}) {
    absl::StatusOr<int> id = ShardIdFromHostname(host);
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << host;
  }
}

TEST(ShardFlagsTest, ShardIdComesFromTheHostname) {
  absl::StatusOr<ShardConfig> c =
      Parse({"--model", "/m", "--num-shards", "4", "--shard-id-from-hostname", "true"},
            "expert-shard-2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->shard_id, 2);
  EXPECT_EQ(c->num_shards, 4);
  c = Parse({"--model", "/m", "--shard-id", "1", "--num-shards", "4",
             "--shard-id-from-hostname=false"},
            "expert-shard-2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->shard_id, 1);
}

TEST(ShardFlagsTest, BackendNamesWhereTheProductsRun) {
  absl::StatusOr<ShardConfig> c = Parse({"--model", "/m", "--shard-id", "0"}, "");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->backend, "");
  c = Parse({"--model", "/m", "--shard-id", "0", "--backend", "cuda:1"}, "");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->backend, "cuda:1");
}

TEST(ShardFlagsTest, RejectsBadHostnameUse) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      // the ordinal must be below --num-shards
      {{"--model", "/m", "--num-shards", "2", "--shard-id-from-hostname", "true"},
       "expert-shard-2"},
      // no ordinal in the name
      {{"--model", "/m", "--num-shards", "2", "--shard-id-from-hostname", "true"}, "shard"},
      // both ways of naming the shard
      {{"--model", "/m", "--num-shards", "4", "--shard-id", "1", "--shard-id-from-hostname",
        "true"},
       "expert-shard-2"},
      // not a boolean
      {{"--model", "/m", "--shard-id-from-hostname", "yes"}, "expert-shard-0"},
      {{"--model", "/m", "--shard-id-from-hostname"}, "expert-shard-0"},
  };
  for (const auto& [args, host] : cases) {
    absl::StatusOr<ShardConfig> c = Parse(args, host);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << args.back() << " " << host;
  }
}

}  // namespace
}  // namespace moeserve::expert_shard
