#include "kvcache/block_index.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace moeserve::kvcache {
namespace {

BlockHash H(uint64_t n) { return BlockHash{n, ~n}; }

class BlockIndexTest : public ::testing::Test {
 protected:
  BlockIndex MakeIndex(int64_t budget, absl::Duration ttl = absl::Seconds(10)) {
    return BlockIndex(BlockIndexOptions{budget, ttl}, &clock_);
  }
  testing::FakeClock clock_;
};

TEST_F(BlockIndexTest, InsertIsIdempotentPerHash) {
  BlockIndex index = MakeIndex(1000);
  EXPECT_EQ(index.Insert(H(1), 100).outcome, InsertOutcome::kInserted);
  EXPECT_EQ(index.Insert(H(1), 100).outcome, InsertOutcome::kAlreadyPresent);
  EXPECT_EQ(index.stats().blocks, 1);
  EXPECT_EQ(index.stats().bytes, 100);
}

TEST_F(BlockIndexTest, EvictsLeastRecentlyUsedFirst) {
  BlockIndex index = MakeIndex(300);
  index.Insert(H(1), 100);
  index.Insert(H(2), 100);
  index.Insert(H(3), 100);
  EXPECT_TRUE(index.Touch(H(1)));  // order now (most recent first): 1 3 2
  IndexInsert insert = index.Insert(H(4), 100);
  EXPECT_EQ(insert.outcome, InsertOutcome::kInserted);
  EXPECT_EQ(insert.evicted, std::vector<BlockHash>{H(2)});
  insert = index.Insert(H(5), 150);  // needs 150: evicts 3 then 1
  EXPECT_EQ(insert.evicted, (std::vector<BlockHash>{H(3), H(1)}));
  EXPECT_TRUE(index.Contains(H(4)));
  EXPECT_TRUE(index.Contains(H(5)));
  EXPECT_EQ(index.stats().bytes, 250);
  EXPECT_EQ(index.stats().evictions, 3);
}

TEST_F(BlockIndexTest, NeverExceedsTheBudget) {
  BlockIndex index = MakeIndex(1000);
  for (uint64_t i = 0; i < 100; ++i) {
    index.Insert(H(i), 37 + static_cast<int64_t>(i % 5) * 50);
    EXPECT_LE(index.stats().bytes, 1000);
  }
  EXPECT_EQ(index.Insert(H(1000), 1001).outcome, InsertOutcome::kNoSpace);
  EXPECT_FALSE(index.Contains(H(1000)));
}

TEST_F(BlockIndexTest, LookupCountsLeadingHitsAndMisses) {
  BlockIndex index = MakeIndex(1000);
  index.Insert(H(1), 10);
  index.Insert(H(2), 10);
  index.Insert(H(4), 10);
  const std::vector<BlockHash> prompt = {H(1), H(2), H(3), H(4)};
  EXPECT_EQ(index.PresentPrefix(prompt), 2);
  IndexLookup found = index.Lookup(prompt, /*max_blocks=*/100, /*take_lease=*/false);
  EXPECT_EQ(found.present_blocks, 2);
  EXPECT_FALSE(found.lease.has_value());
  found = index.Lookup(prompt, /*max_blocks=*/1, false);  // capped (the store vouched for 1)
  EXPECT_EQ(found.present_blocks, 1);
  const std::vector<BlockHash> cold = {H(9)};
  EXPECT_EQ(index.Lookup(cold, 100, true).present_blocks, 0);
  const IndexStats s = index.stats();
  EXPECT_EQ(s.lookups, 3);
  EXPECT_EQ(s.lookup_blocks, 9);
  EXPECT_EQ(s.hit_blocks, 3);
  EXPECT_EQ(s.miss_blocks, 6);
  EXPECT_EQ(s.active_leases, 0);  // nothing to lease on a full miss
}

TEST_F(BlockIndexTest, LookupKeepsEarlierBlocksOfAPrefixLonger) {
  BlockIndex index = MakeIndex(300);
  index.Insert(H(1), 100);
  index.Insert(H(2), 100);
  index.Insert(H(3), 100);
  const std::vector<BlockHash> prompt = {H(1), H(2), H(3)};
  index.Lookup(prompt, 3, false);
  EXPECT_EQ(index.Insert(H(4), 100).evicted, std::vector<BlockHash>{H(3)});
  EXPECT_EQ(index.Insert(H(5), 100).evicted, std::vector<BlockHash>{H(2)});
}

TEST_F(BlockIndexTest, LeasedBlocksAreNeverEvicted) {
  BlockIndex index = MakeIndex(300);
  index.Insert(H(1), 100);
  index.Insert(H(2), 100);
  index.Insert(H(3), 100);
  const std::vector<BlockHash> leased = {H(1), H(2)};
  IndexLookup found = index.Lookup(leased, 2, /*take_lease=*/true);
  ASSERT_TRUE(found.lease.has_value());
  EXPECT_EQ(index.lease_count(H(1)), 1);
  // Only H(3) is evictable.
  EXPECT_EQ(index.Insert(H(4), 100).evicted, std::vector<BlockHash>{H(3)});
  // 200 bytes leased: a 150-byte block cannot fit without touching them; nothing is evicted.
  IndexInsert insert = index.Insert(H(5), 150);
  EXPECT_EQ(insert.outcome, InsertOutcome::kNoSpace);
  EXPECT_TRUE(insert.evicted.empty());
  EXPECT_TRUE(index.Contains(H(4)));
  // After release the blocks are evictable again (and most recent).
  ASSERT_TRUE(index.ReleaseLease(found.lease->id).ok());
  EXPECT_EQ(index.lease_count(H(1)), 0);
  insert = index.Insert(H(5), 150);
  EXPECT_EQ(insert.outcome, InsertOutcome::kInserted);
  EXPECT_EQ(insert.evicted, (std::vector<BlockHash>{H(4), H(2)}));
}

TEST_F(BlockIndexTest, OverlappingLeasesPinUntilTheLastEnds) {
  BlockIndex index = MakeIndex(200);
  index.Insert(H(1), 100);
  index.Insert(H(2), 100);
  const std::vector<BlockHash> one = {H(1)};
  const uint64_t a = index.Lookup(one, 1, true).lease->id;
  const uint64_t b = index.Lookup(one, 1, true).lease->id;
  EXPECT_NE(a, b);
  EXPECT_EQ(index.lease_count(H(1)), 2);
  ASSERT_TRUE(index.ReleaseLease(a).ok());
  EXPECT_EQ(index.lease_count(H(1)), 1);
  EXPECT_EQ(index.Insert(H(3), 100).evicted, std::vector<BlockHash>{H(2)});
  EXPECT_EQ(index.Insert(H(4), 100).evicted, std::vector<BlockHash>{H(3)});  // H(1) still pinned
  ASSERT_TRUE(index.ReleaseLease(b).ok());
  EXPECT_EQ(index.lease_count(H(1)), 0);
  EXPECT_EQ(index.Insert(H(5), 100).evicted, std::vector<BlockHash>{H(4)});
  EXPECT_EQ(index.Insert(H(6), 100).evicted, std::vector<BlockHash>{H(1)});
}

TEST_F(BlockIndexTest, UnknownOrReleasedLeaseIsNotFound) {
  BlockIndex index = MakeIndex(200);
  EXPECT_EQ(index.ReleaseLease(12345).code(), absl::StatusCode::kNotFound);
  index.Insert(H(1), 10);
  const std::vector<BlockHash> one = {H(1)};
  const uint64_t id = index.Lookup(one, 1, true).lease->id;
  EXPECT_TRUE(index.ReleaseLease(id).ok());
  EXPECT_EQ(index.ReleaseLease(id).code(), absl::StatusCode::kNotFound);
}

TEST_F(BlockIndexTest, LeasesExpireAfterTheirTtl) {
  BlockIndex index = MakeIndex(200, absl::Seconds(5));
  index.Insert(H(1), 100);
  index.Insert(H(2), 100);
  const std::vector<BlockHash> one = {H(1)};
  const IndexLookup found = index.Lookup(one, 1, true);
  EXPECT_EQ(found.lease->expires, clock_.Now() + absl::Seconds(5));
  clock_.Advance(absl::Seconds(4));
  EXPECT_EQ(index.SweepExpiredLeases(), 0);
  EXPECT_EQ(index.stats().active_leases, 1);
  clock_.Advance(absl::Seconds(1));  // expiry is inclusive
  // The next state change reclaims it; H(1) is evictable again and goes second.
  EXPECT_EQ(index.Insert(H(3), 100).evicted, std::vector<BlockHash>{H(2)});
  EXPECT_EQ(index.Insert(H(4), 100).evicted, std::vector<BlockHash>{H(1)});
  EXPECT_EQ(index.stats().expired_leases, 1);
  EXPECT_EQ(index.stats().active_leases, 0);
  EXPECT_EQ(index.lease_count(H(1)), 0);
  EXPECT_EQ(index.ReleaseLease(found.lease->id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(index.stats().expired_leases, 1);  // counted once
}

TEST_F(BlockIndexTest, ForgettingALeasedBlockDoesNotDisturbItsSuccessor) {
  BlockIndex index = MakeIndex(200);
  index.Insert(H(1), 100);
  const std::vector<BlockHash> one = {H(1)};
  const uint64_t old_lease = index.Lookup(one, 1, true).lease->id;
  EXPECT_TRUE(index.Forget(H(1)));
  EXPECT_FALSE(index.Forget(H(1)));
  EXPECT_EQ(index.stats().bytes, 0);
  EXPECT_EQ(index.stats().forgotten_blocks, 1);
  index.Insert(H(1), 100);  // published again
  const uint64_t new_lease = index.Lookup(one, 1, true).lease->id;
  ASSERT_TRUE(index.ReleaseLease(old_lease).ok());
  EXPECT_EQ(index.lease_count(H(1)), 1);  // still pinned by the new lease
  index.Insert(H(2), 100);
  EXPECT_EQ(index.Insert(H(3), 100).evicted, std::vector<BlockHash>{H(2)});
  ASSERT_TRUE(index.ReleaseLease(new_lease).ok());
  EXPECT_EQ(index.lease_count(H(1)), 0);
}

}  // namespace
}  // namespace moeserve::kvcache
