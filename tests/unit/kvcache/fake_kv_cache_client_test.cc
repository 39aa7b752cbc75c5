#include "tests/testing/fake_kv_cache_client.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvcache/block_hash.h"
#include "tests/testing/fake_clock.h"

namespace moeserve::testing {
namespace {

using kvcache::BlockHash;
using kvcache::BlockView;

TEST(FakeKvCacheClientTest, BehavesLikeTheCacheAndCanFail) {
  FakeClock clock;
  kvcache::KvCacheOptions options;
  options.block_tokens = 4;
  options.lease_ttl = absl::Seconds(1);
  FakeKvCacheClient client(options, &clock);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<BlockHash> hashes = kvcache::ChainedBlockHashes(tokens, 4);
  ASSERT_EQ(hashes.size(), 2u);
  const std::vector<BlockView> blocks = {{hashes[0], "block0"}};
  ASSERT_TRUE(client.Publish(blocks).ok());
  absl::StatusOr<kvcache::LookupResult> found = client.Lookup(hashes, true);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->present_tokens, 4);
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(client.Release(found->lease->id).code(), absl::StatusCode::kNotFound);  // expired

  client.SetFailure(absl::UnavailableError("kvcache down"));
  EXPECT_EQ(client.Fetch(hashes).status().code(), absl::StatusCode::kUnavailable);
  client.SetFailure(absl::OkStatus());
  absl::StatusOr<kvcache::FetchResult> fetched = client.Fetch(hashes);
  ASSERT_TRUE(fetched.ok());
  ASSERT_EQ(fetched->blocks.size(), 1u);
  EXPECT_EQ(fetched->blocks[0].data, "block0");
  EXPECT_EQ(client.calls(), 5);
}

}  // namespace
}  // namespace moeserve::testing
