#include "router/relay_executor.h"

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace moeserve::router {
namespace {

TEST(RelayExecutorTest, WaitingTasksRunLowestPriorityValueFirstThenInArrivalOrder) {
  absl::Mutex mu;
  std::vector<std::string> order;
  std::vector<size_t> depths;
  absl::Notification started, release;
  {
    RelayExecutor executor(1, [&](size_t n) { depths.push_back(n); });  // under the lock
    executor.Schedule([&] {
      started.Notify();
      release.WaitForNotification();
    });
    started.WaitForNotification();  // the only thread is busy: the rest wait
    auto record = [&](std::string name) {
      return [&, name] {
        absl::MutexLock lock(&mu);
        order.push_back(name);
      };
    };
    executor.Schedule(record("low-a"), 5);
    executor.Schedule(record("normal-a"), 0);
    executor.Schedule(record("low-b"), 5);
    executor.Schedule(record("high"), -1);
    executor.Schedule(record("normal-b"));
    EXPECT_EQ(executor.queued(), 5u);
    release.Notify();
    executor.Stop();
  }
  EXPECT_EQ(order, (std::vector<std::string>{"high", "normal-a", "normal-b", "low-a", "low-b"}));
  // 1 queued then taken at once, then 1..5 queued, then drained 4..0.
  EXPECT_EQ(depths, (std::vector<size_t>{1, 0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0}));
}

}  // namespace
}  // namespace moeserve::router
