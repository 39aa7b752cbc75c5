#include "kvcache/kv_cache.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace moeserve::kvcache {
namespace {

// A memory store that can be switched off (every call kUnavailable / failed) and that lets the
// test drop blocks behind the cache's back.
class SwitchableStore final : public BlockStore {
 public:
  SwitchableStore() : inner_(NewMemoryBlockStore()) {}
  void set_down(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }
  BlockStore& inner() { return *inner_; }

  std::vector<absl::Status> Put(absl::Span<const BlockView> blocks) override {
    if (Down(blocks.size()))
      return std::vector<absl::Status>(blocks.size(), absl::UnavailableError("down"));
    return inner_->Put(blocks);
  }
  std::vector<StoredBlock> Get(absl::Span<const BlockHash> hashes) override {
    if (Down(hashes.size())) {
      std::vector<StoredBlock> out(hashes.size());
      for (StoredBlock& b : out) b.presence = Presence::kUnavailable;
      return out;
    }
    return inner_->Get(hashes);
  }
  std::vector<Presence> Contains(absl::Span<const BlockHash> hashes) override {
    if (Down(hashes.size())) return std::vector<Presence>(hashes.size(), Presence::kUnavailable);
    return inner_->Contains(hashes);
  }
  void Delete(absl::Span<const BlockHash> hashes) override {
    if (!Down(hashes.size())) inner_->Delete(hashes);
  }
  int64_t errors() const override {
    absl::MutexLock lock(&mu_);
    return errors_;
  }

 private:
  bool Down(size_t n) {
    absl::MutexLock lock(&mu_);
    if (down_ && n > 0) ++errors_;
    return down_;
  }
  BlockStorePtr inner_;
  mutable absl::Mutex mu_;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  int64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
};

class KvCacheTest : public ::testing::Test {
 protected:
  KvCacheTest() {
    auto store = std::make_unique<SwitchableStore>();
    store_ = store.get();
    KvCacheOptions options;
    options.block_tokens = 16;
    options.budget_bytes = 1000;
    options.lease_ttl = absl::Seconds(5);
    options.max_block_bytes = 400;
    options.max_blocks_per_request = 8;
    cache_ = std::make_unique<KvCache>(options, std::move(store), &clock_);
  }

  std::vector<BlockHash> Hashes(int n, int first = 0) {
    std::vector<BlockHash> out;
    for (int i = first; i < first + n; ++i) out.push_back(BlockHash{uint64_t(i + 1), 77});
    return out;
  }
  static std::string Data(const BlockHash& h, size_t size = 100) {
    return std::string(size, static_cast<char>('a' + h.lo % 26));
  }
  PublishResult Publish(const std::vector<BlockHash>& hashes, size_t size = 100) {
    std::vector<std::string> data;
    for (const BlockHash& h : hashes) data.push_back(Data(h, size));
    std::vector<BlockView> blocks;
    for (size_t i = 0; i < hashes.size(); ++i) blocks.push_back({hashes[i], data[i]});
    absl::StatusOr<PublishResult> result = cache_->Publish(blocks);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : PublishResult{};
  }

  testing::FakeClock clock_;
  SwitchableStore* store_ = nullptr;
  std::unique_ptr<KvCache> cache_;
};

TEST_F(KvCacheTest, PublishLookupFetchRoundTrip) {
  const std::vector<BlockHash> prompt = Hashes(4);
  const PublishResult published = Publish({prompt[0], prompt[1], prompt[2]});
  EXPECT_EQ(published.stored, 3);
  EXPECT_EQ(published.outcomes, std::vector<PublishOutcome>(3, PublishOutcome::kStored));

  absl::StatusOr<LookupResult> found = cache_->Lookup(prompt, /*take_lease=*/true);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->present_blocks, 3);
  EXPECT_EQ(found->present_tokens, 48);
  ASSERT_TRUE(found->lease.has_value());
  EXPECT_EQ(found->lease->expires, clock_.Now() + absl::Seconds(5));

  absl::StatusOr<FetchResult> fetched = cache_->Fetch(prompt);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  ASSERT_EQ(fetched->blocks.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(fetched->blocks[i].hash, prompt[i]);
    EXPECT_EQ(fetched->blocks[i].data, Data(prompt[i]));
  }
  EXPECT_EQ(fetched->first_missing, prompt[3]);
  EXPECT_TRUE(cache_->ReleaseLease(found->lease->id).ok());

  const KvCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.index.blocks, 3);
  EXPECT_EQ(stats.index.bytes, 300);
  EXPECT_EQ(stats.index.hit_blocks, 3);
  EXPECT_EQ(stats.index.miss_blocks, 1);
  EXPECT_EQ(stats.hit_tokens, 48);
  EXPECT_EQ(stats.fetched_blocks, 3);
  EXPECT_EQ(stats.fetch_misses, 1);
  EXPECT_EQ(stats.published_blocks, 3);
}

// Workers fetch without looking up first; the hit tokens must count what they were served.
TEST_F(KvCacheTest, HitTokensCountFetchesWithoutALookup) {
  const std::vector<BlockHash> prompt = Hashes(3);
  Publish({prompt[0], prompt[1]});
  absl::StatusOr<FetchResult> fetched = cache_->Fetch(prompt);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  ASSERT_EQ(fetched->blocks.size(), 2u);
  const KvCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.index.hit_blocks, 0);
  EXPECT_EQ(stats.hit_tokens, 32);
}

TEST_F(KvCacheTest, PublishIsIdempotent) {
  const std::vector<BlockHash> blocks = Hashes(2);
  Publish(blocks);
  const PublishResult again = Publish({blocks[0], blocks[1], blocks[1]});
  EXPECT_EQ(again.stored, 0);
  EXPECT_EQ(again.already_present, 3);
  EXPECT_EQ(cache_->Stats().index.blocks, 2);
  EXPECT_EQ(cache_->Stats().index.bytes, 200);
  // A duplicate inside one request is stored once.
  const std::vector<BlockHash> fresh = Hashes(1, 10);
  const PublishResult dup = Publish({fresh[0], fresh[0]});
  EXPECT_EQ(dup.outcomes, (std::vector<PublishOutcome>{PublishOutcome::kStored,
                                                       PublishOutcome::kAlreadyPresent}));
}

TEST_F(KvCacheTest, RejectsMalformedRequests) {
  EXPECT_EQ(cache_->Lookup({}, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Fetch({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Publish({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Lookup(Hashes(9), false).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string big(401, 'x');
  const std::vector<BlockView> oversized = {{Hashes(1)[0], big}};
  absl::Status s = cache_->Publish(oversized).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("401 bytes > limit 400"), absl::string_view::npos) << s;
  const std::vector<BlockView> empty = {{Hashes(1)[0], ""}};
  EXPECT_EQ(cache_->Publish(empty).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->ReleaseLease(42).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache_->Stats().index.blocks, 0);
}

TEST_F(KvCacheTest, EvictedBlocksLeaveTheStore) {
  Publish(Hashes(8), 250);  // budget 1000: only the last 4 stay
  const KvCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.index.blocks, 4);
  EXPECT_EQ(stats.index.evictions, 4);
  const std::vector<BlockHash> all = Hashes(8);
  const std::vector<Presence> presence = store_->inner().Contains(all);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(presence[i], i < 4 ? Presence::kAbsent : Presence::kPresent) << i;
  }
}

TEST_F(KvCacheTest, LeasedBlocksSurvivePressureAndFullBudgetDropsPublishes) {
  const std::vector<BlockHash> kept = Hashes(4);
  Publish(kept, 250);
  absl::StatusOr<LookupResult> found = cache_->Lookup(kept, true);
  ASSERT_TRUE(found.ok());
  ASSERT_EQ(found->present_blocks, 4);
  const PublishResult dropped = Publish(Hashes(2, 10), 250);
  EXPECT_EQ(dropped.outcomes, std::vector<PublishOutcome>(2, PublishOutcome::kDroppedNoSpace));
  EXPECT_EQ(store_->inner().Contains(Hashes(2, 10)),
            std::vector<Presence>(2, Presence::kAbsent));  // not left behind in the store
  EXPECT_EQ(cache_->Lookup(kept, false)->present_blocks, 4);
  // Once the lease expires the space is usable again.
  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(Publish(Hashes(2, 10), 250).stored, 2);
  const KvCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.index.expired_leases, 1);
  EXPECT_EQ(stats.dropped_blocks, 2);
}

TEST_F(KvCacheTest, BlocksLostByTheStoreAreMissesAndForgotten) {
  const std::vector<BlockHash> prompt = Hashes(3);
  Publish(prompt);
  const std::vector<BlockHash> lost = {prompt[1]};
  store_->inner().Delete(lost);

  absl::StatusOr<FetchResult> fetched = cache_->Fetch(prompt);
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(fetched->blocks.size(), 1u);
  EXPECT_EQ(fetched->first_missing, prompt[1]);
  KvCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.index.blocks, 2);
  EXPECT_EQ(stats.index.forgotten_blocks, 1);

  // Lookup verifies with the store too.
  const std::vector<BlockHash> first = {prompt[0]};
  store_->inner().Delete(first);
  EXPECT_EQ(cache_->Lookup(prompt, true)->present_blocks, 0);
  stats = cache_->Stats();
  EXPECT_EQ(stats.index.blocks, 1);
  EXPECT_EQ(stats.index.active_leases, 0);
}

// A store that lost everything (Redis restarted): one fetch forgets every lost block it was
// asked for, so the next publish of the prefix stores all of it again and the one after is a
// full hit. It used to forget only the first lost block, healing one block per request.
TEST_F(KvCacheTest, AFetchForgetsEveryLostBlockSoOnePublishHealsThePrefix) {
  const std::vector<BlockHash> prompt = Hashes(4);
  Publish(prompt);
  store_->inner().Delete(prompt);  // the restart

  absl::StatusOr<FetchResult> fetched = cache_->Fetch(prompt);
  ASSERT_TRUE(fetched.ok());
  EXPECT_TRUE(fetched->blocks.empty());
  EXPECT_EQ(cache_->Stats().index.forgotten_blocks, 4);
  EXPECT_EQ(cache_->Stats().index.blocks, 0);

  const PublishResult again = Publish(prompt);
  EXPECT_EQ(again.stored, 4);
  EXPECT_EQ(again.already_present, 0);
  fetched = cache_->Fetch(prompt);
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(fetched->blocks.size(), 4u);

  // A block lost in the middle: the fetch stops there (a prefix must be contiguous), and the
  // blocks after it that the store still has stay cached.
  const std::vector<BlockHash> middle = {prompt[1]};
  store_->inner().Delete(middle);
  fetched = cache_->Fetch(prompt);
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(fetched->blocks.size(), 1u);
  EXPECT_EQ(fetched->first_missing, prompt[1]);
  EXPECT_EQ(cache_->Stats().index.blocks, 3);
}

TEST_F(KvCacheTest, StoreOutageMeansMissesAndDroppedPublishesNotErrors) {
  const std::vector<BlockHash> prompt = Hashes(2);
  Publish(prompt);
  store_->set_down(true);
  absl::StatusOr<LookupResult> found = cache_->Lookup(prompt, true);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->present_blocks, 0);
  EXPECT_FALSE(found->lease.has_value());
  absl::StatusOr<FetchResult> fetched = cache_->Fetch(prompt);
  ASSERT_TRUE(fetched.ok());
  EXPECT_TRUE(fetched->blocks.empty());
  const PublishResult dropped = Publish(Hashes(1, 5));
  EXPECT_EQ(dropped.outcomes, std::vector<PublishOutcome>{PublishOutcome::kDroppedUnavailable});
  KvCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.index.blocks, 2);  // an outage is not proof of loss: the index keeps them
  EXPECT_GT(stats.store_errors, 0);

  store_->set_down(false);
  EXPECT_EQ(cache_->Lookup(prompt, false)->present_blocks, 2);
  EXPECT_EQ(Publish(Hashes(1, 5)).stored, 1);
}

}  // namespace
}  // namespace moeserve::kvcache
