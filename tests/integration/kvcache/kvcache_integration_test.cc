// The KV-cache service end to end: a real redis-server (or two), the server in-process on port 0,
// and every call through GrpcKvCacheClient.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kvcache/block_hash.h"
#include "kvcache/grpc_kvcache_client.h"
#include "kvcache/kvcache_server.h"
#include "kvcache/redis_block_store.h"
#include "moeserve/v1/kvcache.grpc.pb.h"
#include "tests/integration/kvcache/redis_process.h"
#include "tests/testing/fake_clock.h"

namespace moeserve::kvcache {
namespace {

using ::moeserve::testing::RedisProcess;

constexpr int64_t kBlockTokens = 16;

// Deterministic, block-specific bytes.
std::string BlockData(const BlockHash& hash, size_t size) {
  std::string data(size, '\0');
  uint64_t x = hash.lo ^ hash.hi;
  for (char& c : data) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>(x >> 56);
  }
  return data;
}

std::vector<int32_t> Prompt(int num_tokens, int32_t salt) {
  std::vector<int32_t> tokens(num_tokens);
  for (int i = 0; i < num_tokens; ++i) tokens[i] = salt * 100000 + i;
  return tokens;
}

class KvCacheIntegrationTest : public ::testing::Test {
 protected:
  // Starts `n` Redis servers (none: memory store) and the service over them.
  void StartCluster(int num_redis) {
    KvCacheServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.cache.block_tokens = kBlockTokens;
    config.cache.budget_bytes = int64_t{48} << 20;
    config.cache.max_block_bytes = int64_t{8} << 20;
    config.redis.reconnect_backoff = absl::ZeroDuration();  // retry on every call: deterministic
    config.fetch_batch_blocks = 4;  // a 10-block fetch spans several store batches
    for (int i = 0; i < num_redis; ++i) {
      absl::StatusOr<std::unique_ptr<RedisProcess>> redis = RedisProcess::Start();
      ASSERT_TRUE(redis.ok()) << redis.status();
      config.redis.endpoints.push_back(RedisEndpoint{"127.0.0.1", (*redis)->port()});
      redis_.push_back(std::move(*redis));
    }
    key_prefix_ = config.redis.key_prefix;
    absl::StatusOr<std::unique_ptr<KvCacheServer>> server = KvCacheServer::Create(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    target_ = absl::StrCat("127.0.0.1:", server_->Port());
    client_ = GrpcKvCacheClient::Create(target_);
  }

  // Publishes one block per hash (`size` bytes each) and expects every one stored.
  void PublishAll(const std::vector<BlockHash>& hashes, size_t size = 1000) {
    std::vector<std::string> data;
    for (const BlockHash& h : hashes) data.push_back(BlockData(h, size));
    std::vector<BlockView> blocks;
    for (size_t i = 0; i < hashes.size(); ++i) blocks.push_back({hashes[i], data[i]});
    absl::StatusOr<PublishResult> published = client_->Publish(blocks);
    ASSERT_TRUE(published.ok()) << published.status();
    EXPECT_EQ(published->stored, static_cast<int64_t>(hashes.size()));
  }

  int64_t Present(const std::vector<BlockHash>& hashes) {
    absl::StatusOr<LookupResult> found = client_->Lookup(hashes, false);
    EXPECT_TRUE(found.ok()) << found.status();
    return found.ok() ? found->present_blocks : -1;
  }

  KvCacheStats Stats() {
    absl::StatusOr<KvCacheStats> stats = client_->Stats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? *stats : KvCacheStats{};
  }

  std::string Key(const BlockHash& hash) const { return RedisBlockKey(key_prefix_, hash); }

  std::vector<std::unique_ptr<RedisProcess>> redis_;
  std::unique_ptr<KvCacheServer> server_;
  std::unique_ptr<GrpcKvCacheClient> client_;
  std::string target_;
  std::string key_prefix_;
};

TEST_F(KvCacheIntegrationTest, PublishLookupFetchRoundTripThroughRedis) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  const std::vector<BlockHash> hashes =
      ChainedBlockHashes(Prompt(10 * kBlockTokens + 3, 1), kBlockTokens);
  ASSERT_EQ(hashes.size(), 10u);
  // The first 9 blocks are cached; one is larger than gRPC's default 4 MB message limit.
  std::vector<std::string> data;
  for (int i = 0; i < 9; ++i) data.push_back(BlockData(hashes[i], i == 4 ? (5 << 20) : 3000 + i));
  std::vector<BlockView> blocks;
  for (int i = 0; i < 9; ++i) blocks.push_back({hashes[i], data[i]});
  absl::StatusOr<PublishResult> published = client_->Publish(blocks);
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(published->stored, 9);
  EXPECT_EQ(redis_[0]->Integer({"EXISTS", Key(hashes[4])}), 1);
  EXPECT_EQ(redis_[0]->Integer({"STRLEN", Key(hashes[4])}), 5 << 20);

  absl::StatusOr<LookupResult> found = client_->Lookup(hashes, /*take_lease=*/true);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->present_blocks, 9);
  EXPECT_EQ(found->present_tokens, 9 * kBlockTokens);
  ASSERT_TRUE(found->lease.has_value());
  EXPECT_GT(found->lease->expires, absl::Now());

  // Several store batches of 4; the 5 MiB block closes a message, so several messages too.
  absl::StatusOr<FetchResult> fetched = client_->Fetch(hashes);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  ASSERT_EQ(fetched->blocks.size(), 9u);
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(fetched->blocks[i].hash, hashes[i]) << i;
    EXPECT_TRUE(fetched->blocks[i].data == data[i]) << "block " << i << " bytes differ";
  }
  EXPECT_EQ(fetched->first_missing, hashes[9]);
  EXPECT_TRUE(client_->Release(found->lease->id).ok());
  EXPECT_EQ(client_->Release(found->lease->id).code(), absl::StatusCode::kNotFound);

  // Publishing again is a no-op.
  absl::StatusOr<PublishResult> again = client_->Publish(blocks);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->already_present, 9);

  const KvCacheStats stats = Stats();
  EXPECT_EQ(stats.index.blocks, 9);
  EXPECT_EQ(stats.index.hit_blocks, 9);
  EXPECT_EQ(stats.index.miss_blocks, 1);
  EXPECT_EQ(stats.hit_tokens, 9 * kBlockTokens);
  EXPECT_EQ(stats.fetched_blocks, 9);
  EXPECT_EQ(stats.published_blocks, 9);
  EXPECT_EQ(stats.duplicate_blocks, 9);
  EXPECT_EQ(stats.store_errors, 0);
}

TEST_F(KvCacheIntegrationTest, BadRequestsAreInvalidArgumentOrNotFound) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(0));  // memory store
  EXPECT_EQ(client_->Lookup({}, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Fetch({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Release(99).code(), absl::StatusCode::kNotFound);
  const BlockHash h = ChainedBlockHashes(Prompt(kBlockTokens, 2), kBlockTokens)[0];
  const std::string too_big((8 << 20) + 1, 'x');
  const std::vector<BlockView> oversized = {{h, too_big}};
  EXPECT_EQ(client_->Publish(oversized).status().code(), absl::StatusCode::kInvalidArgument);

  // A hash that is not 16 bytes, straight through the stub.
  auto stub = moeserve::v1::KvCache::NewStub(
      grpc::CreateChannel(target_, grpc::InsecureChannelCredentials()));
  moeserve::v1::LookupRequest request;
  request.add_block_hashes("short");
  moeserve::v1::LookupResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub->Lookup(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("has 5 bytes, want 16"), std::string::npos)
      << status.error_message();
}

TEST_F(KvCacheIntegrationTest, MemoryStoreRoundTrip) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(0));
  const std::vector<BlockHash> hashes =
      ChainedBlockHashes(Prompt(5 * kBlockTokens, 3), kBlockTokens);
  ASSERT_NO_FATAL_FAILURE(PublishAll(hashes));
  EXPECT_EQ(Present(hashes), 5);
  absl::StatusOr<FetchResult> fetched = client_->Fetch(hashes);
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(fetched->blocks.size(), 5u);
  EXPECT_FALSE(fetched->first_missing.has_value());
  EXPECT_EQ(fetched->blocks[3].data, BlockData(hashes[3], 1000));
}

TEST_F(KvCacheIntegrationTest, BlocksAreShardedOverTwoRedisEndpoints) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(2));
  const std::vector<BlockHash> hashes =
      ChainedBlockHashes(Prompt(40 * kBlockTokens, 4), kBlockTokens);
  ASSERT_NO_FATAL_FAILURE(PublishAll(hashes));
  int on_shard[2] = {0, 0};
  for (const BlockHash& h : hashes) {
    const int shard = RedisShardOf(h, 2);
    ++on_shard[shard];
    EXPECT_EQ(redis_[shard]->Integer({"EXISTS", Key(h)}), 1) << h.ToHex();
    EXPECT_EQ(redis_[1 - shard]->Integer({"EXISTS", Key(h)}), 0) << h.ToHex();
  }
  EXPECT_GT(on_shard[0], 0);
  EXPECT_GT(on_shard[1], 0);
  EXPECT_EQ(redis_[0]->Integer({"DBSIZE"}), on_shard[0]);
  EXPECT_EQ(redis_[1]->Integer({"DBSIZE"}), on_shard[1]);
  absl::StatusOr<FetchResult> fetched = client_->Fetch(hashes);
  ASSERT_TRUE(fetched.ok());
  ASSERT_EQ(fetched->blocks.size(), 40u);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(fetched->blocks[i].data, BlockData(hashes[i], 1000));
}

TEST_F(KvCacheIntegrationTest, RedisOutageGivesMissesAndDroppedPublishesThenRecovers) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  const std::vector<BlockHash> hashes =
      ChainedBlockHashes(Prompt(4 * kBlockTokens, 5), kBlockTokens);
  ASSERT_NO_FATAL_FAILURE(PublishAll(hashes));
  EXPECT_EQ(Present(hashes), 4);

  redis_[0]->Kill();
  // Every RPC still succeeds; the cache just has nothing to offer.
  EXPECT_EQ(Present(hashes), 0);
  absl::StatusOr<FetchResult> fetched = client_->Fetch(hashes);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_TRUE(fetched->blocks.empty());
  EXPECT_EQ(fetched->first_missing, hashes[0]);
  const std::vector<BlockHash> more = ChainedBlockHashes(Prompt(2 * kBlockTokens, 6), kBlockTokens);
  const std::string payload = BlockData(more[0], 100);
  const std::vector<BlockView> blocks = {{more[0], payload}, {more[1], payload}};
  absl::StatusOr<PublishResult> dropped = client_->Publish(blocks);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(dropped->dropped, 2);
  EXPECT_EQ(dropped->outcomes, std::vector<PublishOutcome>(2, PublishOutcome::kDroppedUnavailable));
  KvCacheStats stats = Stats();
  EXPECT_GT(stats.store_errors, 0);
  EXPECT_EQ(stats.dropped_blocks, 2);
  EXPECT_EQ(stats.index.blocks, 4);  // unreachable is not gone

  // A fresh, empty Redis on the same port: old blocks are found gone and forgotten, new ones work.
  ASSERT_TRUE(redis_[0]->Restart().ok());
  EXPECT_EQ(Present(hashes), 0);
  stats = Stats();
  EXPECT_EQ(stats.index.blocks, 0);
  EXPECT_EQ(stats.index.forgotten_blocks, 4);
  ASSERT_NO_FATAL_FAILURE(PublishAll(hashes));
  EXPECT_EQ(Present(hashes), 4);
  fetched = client_->Fetch(hashes);
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(fetched->blocks.size(), 4u);
}

// Calls keep coming while the store backs off after a Redis failure (steady load): they must not
// push the reconnect further out. They did, so a store called more often than every
// reconnect_backoff never reconnected after a Redis restart.
TEST_F(KvCacheIntegrationTest, RedisStoreReconnectsUnderSteadyCallsAfterARestart) {
  absl::StatusOr<std::unique_ptr<RedisProcess>> redis = RedisProcess::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  ::moeserve::testing::FakeClock clock;
  RedisStoreOptions options;
  options.endpoints.push_back(RedisEndpoint{"127.0.0.1", (*redis)->port()});
  options.reconnect_backoff = absl::Milliseconds(200);
  absl::StatusOr<BlockStorePtr> store = NewRedisBlockStore(options, &clock);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::vector<BlockHash> hashes = {BlockHash{1, 2}};
  const std::string payload(100, 'x');
  ASSERT_TRUE((*store)->Put({BlockView{hashes[0], payload}})[0].ok());

  (*redis)->Kill();
  EXPECT_EQ((*store)->Get(hashes)[0].presence, Presence::kUnavailable);  // the backoff starts
  ASSERT_TRUE((*redis)->Restart().ok());
  for (int i = 0; i < 3; ++i) {  // calls every 60 ms while backing off
    clock.Advance(absl::Milliseconds(60));
    EXPECT_EQ((*store)->Get(hashes)[0].presence, Presence::kUnavailable) << i;
  }
  clock.Advance(absl::Milliseconds(60));  // 240 ms after the failure: time to reconnect
  EXPECT_EQ((*store)->Get(hashes)[0].presence, Presence::kAbsent);  // an empty Redis answers
  EXPECT_TRUE((*store)->Put({BlockView{hashes[0], payload}})[0].ok());
  EXPECT_EQ((*store)->Get(hashes)[0].presence, Presence::kPresent);
}

TEST_F(KvCacheIntegrationTest, BlocksDeletedBehindTheServiceAreReportedMissingAndForgotten) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  const std::vector<BlockHash> hashes =
      ChainedBlockHashes(Prompt(3 * kBlockTokens, 7), kBlockTokens);
  ASSERT_NO_FATAL_FAILURE(PublishAll(hashes));
  ASSERT_EQ(redis_[0]->Integer({"DEL", Key(hashes[1])}), 1);

  absl::StatusOr<FetchResult> fetched = client_->Fetch(hashes);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  ASSERT_EQ(fetched->blocks.size(), 1u);
  EXPECT_EQ(fetched->blocks[0].hash, hashes[0]);
  EXPECT_EQ(fetched->first_missing, hashes[1]);
  KvCacheStats stats = Stats();
  EXPECT_EQ(stats.index.blocks, 2);  // the index forgot the deleted block
  EXPECT_EQ(stats.index.forgotten_blocks, 1);
  EXPECT_EQ(stats.fetch_misses, 1);
  EXPECT_EQ(stats.store_errors, 0);  // a miss, not an error

  {
    moeserve::testing::RedisReplyPtr ok = redis_[0]->Command({"FLUSHALL"});
    ASSERT_NE(ok, nullptr);
  }
  fetched = client_->Fetch(hashes);
  ASSERT_TRUE(fetched.ok());
  EXPECT_TRUE(fetched->blocks.empty());
  EXPECT_EQ(fetched->first_missing, hashes[0]);
  EXPECT_EQ(Stats().index.blocks, 1);  // hashes[2] is still claimed: no one has asked for it yet
  const std::vector<BlockHash> last = {hashes[2]};
  EXPECT_EQ(Present(last), 0);
  EXPECT_EQ(Stats().index.blocks, 0);
}

TEST_F(KvCacheIntegrationTest, ConcurrentClientsShareAPrefix) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(2));
  // Every client's prompt starts with the same 4 blocks, then 4 of its own.
  constexpr int kClients = 4;
  std::vector<std::vector<BlockHash>> prompts;
  for (int c = 0; c < kClients; ++c) {
    std::vector<int32_t> tokens = Prompt(4 * kBlockTokens, 8);
    const std::vector<int32_t> own = Prompt(4 * kBlockTokens, 20 + c);
    tokens.insert(tokens.end(), own.begin(), own.end());
    prompts.push_back(ChainedBlockHashes(tokens, kBlockTokens));
  }
  std::vector<int> fetched_ok(kClients, 0);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      std::unique_ptr<GrpcKvCacheClient> client = GrpcKvCacheClient::Create(target_);
      const std::vector<BlockHash>& hashes = prompts[c];
      std::vector<std::string> data;
      for (const BlockHash& h : hashes) data.push_back(BlockData(h, 2000));
      std::vector<BlockView> blocks;
      for (size_t i = 0; i < hashes.size(); ++i) blocks.push_back({hashes[i], data[i]});
      for (int round = 0; round < 5; ++round) {
        if (!client->Publish(blocks).ok()) return;
        absl::StatusOr<LookupResult> found = client->Lookup(hashes, true);
        absl::StatusOr<FetchResult> fetched = client->Fetch(hashes);
        if (!found.ok() || !fetched.ok() || !found->lease.has_value()) return;
        if (!client->Release(found->lease->id).ok()) return;
        bool same = fetched->blocks.size() == hashes.size();
        for (size_t i = 0; same && i < hashes.size(); ++i) {
          same = fetched->blocks[i].data == data[i];
        }
        fetched_ok[c] += same ? 1 : 0;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(fetched_ok[c], 5) << "client " << c;
  const KvCacheStats stats = Stats();
  EXPECT_EQ(stats.index.blocks, 4 + 4 * kClients);  // the shared prefix is stored once
  EXPECT_EQ(stats.published_blocks, 4 + 4 * kClients);
  EXPECT_EQ(stats.index.active_leases, 0);
}

}  // namespace
}  // namespace moeserve::kvcache
