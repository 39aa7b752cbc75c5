#include "common/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve {
namespace {

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 1000}) {
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPoolTest, RunOnAllRunsEachThreadIndexOnce) {
  ThreadPool pool(4);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::atomic<int>> seen(4);
    pool.RunOnAll([&](int t) { seen[t].fetch_add(1); });
    for (int t = 0; t < 4; ++t) EXPECT_EQ(seen[t].load(), 1);
  }
}

// Many short regions back to back (helpers spinning between them), then regions after the
// helpers have gone to sleep: every index is covered once each time.
TEST(ThreadPoolTest, BackToBackAndAfterSleepingRegions) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(97);
  auto region = [&] {
    pool.ParallelFor(97, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
  };
  for (int r = 0; r < 2000; ++r) region();
  for (int r = 0; r < 3; ++r) {
    std::this_thread::sleep_for(std::chrono::microseconds(20 * ThreadPool::kSpinMicros));
    region();
  }
  for (int64_t i = 0; i < 97; ++i) EXPECT_EQ(hits[i].load(), 2003) << "i=" << i;
}

// Chunks are taken dynamically, but never shorter than the grain unless n is.
TEST(ThreadPoolTest, ChunksRespectTheGrain) {
  ThreadPool pool(2);
  for (int64_t n : {5, 20, 31, 64, 1000}) {
    std::atomic<int64_t> smallest{n};
    std::atomic<int64_t> covered{0};
    pool.ParallelFor(n, 16, [&](int64_t b, int64_t e) {
      int64_t cur = smallest.load();
      while (e - b < cur && !smallest.compare_exchange_weak(cur, e - b)) {
      }
      covered.fetch_add(e - b);
    });
    EXPECT_EQ(covered.load(), n);
    EXPECT_GE(smallest.load(), std::min<int64_t>(n, 16)) << "n=" << n;
  }
}

TEST(ThreadPoolTest, SingleThreadPoolRunsInline) {
  ThreadPool pool(1);
  int64_t total = 0;
  pool.ParallelFor(10, 1, [&](int64_t b, int64_t e) { total += e - b; });
  EXPECT_EQ(total, 10);
}

}  // namespace
}  // namespace moeserve
