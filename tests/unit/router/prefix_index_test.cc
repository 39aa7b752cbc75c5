#include "router/prefix_index.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kvcache/block_hash.h"

namespace moeserve::router {
namespace {

using kvcache::BlockHash;

std::vector<int32_t> Tokens(int n, int32_t base) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(base + i);
  return t;
}

std::vector<BlockHash> Hashes(const std::vector<int32_t>& tokens) {
  return kvcache::ChainedBlockHashes(tokens, 4);
}

TEST(PrefixIndexTest, EmptyIndexHasNoHits) {
  PrefixIndex index(16);
  EXPECT_TRUE(index.Lookup(Hashes(Tokens(12, 0))).empty());
  EXPECT_TRUE(index.Lookup({}).empty());
}

TEST(PrefixIndexTest, CountsLeadingBlocksPerWorker) {
  PrefixIndex index(64);
  std::vector<int32_t> prompt = Tokens(16, 0);  // 4 blocks
  std::vector<BlockHash> h = Hashes(prompt);
  index.Record(absl::MakeConstSpan(h).subspan(0, 2), 1);
  index.Record(h, 2);
  PrefixHits hits = index.Lookup(h);
  EXPECT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[1], 2);
  EXPECT_EQ(hits[2], 4);
}

TEST(PrefixIndexTest, SharedPrefixThenDivergence) {
  PrefixIndex index(64);
  std::vector<int32_t> a = Tokens(16, 0);
  std::vector<int32_t> b = a;
  b[9] = 999;  // differs in block 2
  index.Record(Hashes(a), 7);
  PrefixHits hits = index.Lookup(Hashes(b));
  EXPECT_EQ(hits[7], 2);
}

TEST(PrefixIndexTest, GapBreaksTheRun) {
  PrefixIndex index(64);
  std::vector<BlockHash> h = Hashes(Tokens(16, 0));
  // Worker 3 is recorded for blocks 1..3 only: without block 0 its prefix is empty.
  index.Record(absl::MakeConstSpan(h).subspan(1), 3);
  EXPECT_TRUE(index.Lookup(h).empty());
}

TEST(PrefixIndexTest, EvictsLeastRecentlyRecordedBlocks) {
  PrefixIndex index(4);
  std::vector<BlockHash> a = Hashes(Tokens(16, 0));    // 4 blocks
  std::vector<BlockHash> b = Hashes(Tokens(8, 1000));  // 2 blocks
  index.Record(a, 1);
  index.Record(b, 2);
  EXPECT_EQ(index.size(), 4u);
  // a's first two blocks were the least recently recorded and are gone.
  EXPECT_TRUE(index.Lookup(a).empty());
  EXPECT_EQ(index.Lookup(b)[2], 2);
  // Touching b again and recording a's first block evicts a's block 2, not b.
  index.Record(absl::MakeConstSpan(a).subspan(0, 1), 1);
  EXPECT_EQ(index.size(), 4u);
  EXPECT_EQ(index.Lookup(b)[2], 2);
  EXPECT_EQ(index.Lookup(a)[1], 1);
}

TEST(PrefixIndexTest, BoundsWorkersPerBlock) {
  PrefixIndex index(16, 2);
  std::vector<BlockHash> h = Hashes(Tokens(4, 0));
  index.Record(h, 1);
  index.Record(h, 2);
  index.Record(h, 3);
  PrefixHits hits = index.Lookup(h);
  EXPECT_EQ(hits.size(), 2u);
  EXPECT_FALSE(hits.contains(1));
  EXPECT_EQ(hits[3], 1);
}

TEST(PrefixIndexTest, ForgetWorker) {
  PrefixIndex index(16);
  std::vector<BlockHash> h = Hashes(Tokens(8, 0));
  index.Record(h, 1);
  index.Record(h, 2);
  index.ForgetWorker(1);
  PrefixHits hits = index.Lookup(h);
  EXPECT_FALSE(hits.contains(1));
  EXPECT_EQ(hits[2], 2);
  index.ForgetWorker(2);
  EXPECT_EQ(index.size(), 0u);
}

}  // namespace
}  // namespace moeserve::router
