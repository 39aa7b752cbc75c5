#include "router/policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace moeserve::router {
namespace {

WorkerLoad Worker(WorkerId id, int running = 0, int waiting = 0, int64_t free_blocks = 100) {
  WorkerLoad w;
  w.id = id;
  w.can_prefill = true;
  w.can_decode = true;
  w.healthy = true;
  w.running = running;
  w.waiting = waiting;
  w.kv_blocks_free = free_blocks;
  w.kv_blocks_total = 100;
  return w;
}

PrefillPolicyOptions Options(double alpha = 1.0) {
  PrefillPolicyOptions o;
  o.block_tokens = 16;
  o.alpha = alpha;
  o.load_cost_tokens = 64;
  return o;
}

TEST(PickPrefillWorkerTest, EmptySetIsUnavailable) {
  absl::StatusOr<WorkerId> got = PickPrefillWorker({}, {}, Options());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(got.status().message().find("prefill"), absl::string_view::npos);
}

TEST(PickPrefillWorkerTest, TieGoesToLowestId) {
  std::vector<WorkerLoad> w = {Worker(3), Worker(1), Worker(2)};
  EXPECT_EQ(*PickPrefillWorker(w, {}, Options()), 1);
}

TEST(PickPrefillWorkerTest, EqualScoreGoesToLowerLoad) {
  // Worker 0: 4 cached blocks (64 tokens), load 1 -> 64 - 64 = 0. Worker 1: none, load 0 -> 0.
  std::vector<WorkerLoad> w = {Worker(0, 1), Worker(1, 0)};
  EXPECT_EQ(*PickPrefillWorker(w, {{0, 4}}, Options()), 1);
}

TEST(PickPrefillWorkerTest, PrefersLongestPrefixAtEqualLoad) {
  std::vector<WorkerLoad> w = {Worker(0), Worker(1), Worker(2)};
  EXPECT_EQ(*PickPrefillWorker(w, {{0, 2}, {1, 7}, {2, 3}}, Options()), 1);
}

TEST(PickPrefillWorkerTest, LoadOutweighsShortPrefix) {
  // Worker 0: 2 blocks = 32 tokens, load 2 -> 32 - 128 < 0; worker 1 idle -> 0.
  std::vector<WorkerLoad> w = {Worker(0, 1, 1), Worker(1)};
  EXPECT_EQ(*PickPrefillWorker(w, {{0, 2}}, Options()), 1);
}

TEST(PickPrefillWorkerTest, LongPrefixOutweighsLoad) {
  // Worker 0: 20 blocks = 320 tokens, load 2 -> 320 - 128 = 192 > 0.
  std::vector<WorkerLoad> w = {Worker(0, 1, 1), Worker(1)};
  EXPECT_EQ(*PickPrefillWorker(w, {{0, 20}}, Options()), 0);
}

TEST(PickPrefillWorkerTest, AlphaZeroIgnoresLoad) {
  std::vector<WorkerLoad> w = {Worker(0, 50, 50), Worker(1)};
  EXPECT_EQ(*PickPrefillWorker(w, {{0, 1}}, Options(0.0)), 0);
  EXPECT_EQ(*PickPrefillWorker(w, {{0, 1}}, Options(1.0)), 1);
}

TEST(PickPrefillWorkerTest, SkipsUnhealthyDecodeOnlyAndExcluded) {
  std::vector<WorkerLoad> w = {Worker(0), Worker(1), Worker(2), Worker(3, 9, 9)};
  w[0].healthy = false;
  w[1].can_prefill = false;
  PrefixHits hits = {{0, 100}, {1, 100}, {2, 100}};
  EXPECT_EQ(*PickPrefillWorker(w, hits, Options()), 2);
  EXPECT_EQ(*PickPrefillWorker(w, hits, Options(), {2}), 3);
  absl::StatusOr<WorkerId> none = PickPrefillWorker(w, hits, Options(), {2, 3});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
}

TEST(PickDecodeWorkerTest, EmptySetIsUnavailable) {
  absl::StatusOr<WorkerId> got = PickDecodeWorker({});
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(got.status().message().find("decode"), absl::string_view::npos);
}

TEST(PickDecodeWorkerTest, FewestRunningPlusWaiting) {
  std::vector<WorkerLoad> w = {Worker(0, 2, 0), Worker(1, 0, 3), Worker(2, 1, 0)};
  EXPECT_EQ(*PickDecodeWorker(w), 2);
}

TEST(PickDecodeWorkerTest, TieOnLoadGoesToMostFreeBlocksThenLowestId) {
  std::vector<WorkerLoad> w = {Worker(4, 1, 0, 10), Worker(2, 1, 0, 50), Worker(3, 0, 1, 50)};
  EXPECT_EQ(*PickDecodeWorker(w), 2);
  std::vector<WorkerLoad> same = {Worker(5), Worker(4), Worker(6)};
  EXPECT_EQ(*PickDecodeWorker(same), 4);
}

TEST(PickDecodeWorkerTest, SkipsUnhealthyPrefillOnlyAndExcluded) {
  std::vector<WorkerLoad> w = {Worker(0), Worker(1), Worker(2, 5, 5)};
  w[0].healthy = false;
  w[1].can_decode = false;
  EXPECT_EQ(*PickDecodeWorker(w), 2);
  EXPECT_EQ(PickDecodeWorker(w, {2}).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace moeserve::router
