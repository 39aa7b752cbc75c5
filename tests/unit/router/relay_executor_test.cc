#include "router/relay_executor.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
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

// Two threads held busy, one queue slot: the third task waits, the fourth is refused; once the
// threads are released every accepted task runs.
TEST(RelayExecutorTest, TryScheduleBoundsTheWaitingTasks) {
  RelayExecutor executor(2);
  absl::Notification release;
  std::atomic<int> started{0}, ran{0};
  auto hold = [&] {
    started.fetch_add(1);
    release.WaitForNotification();
    ran.fetch_add(1);
  };
  // Room to queue both even before the threads have started waiting for work.
  EXPECT_TRUE(executor.TrySchedule(hold, 100));
  EXPECT_TRUE(executor.TrySchedule(hold, 100));
  while (started.load() < 2) absl::SleepFor(absl::Milliseconds(1));  // both threads busy
  EXPECT_EQ(executor.waiting(), 0u);
  EXPECT_TRUE(executor.TrySchedule([&] { ran.fetch_add(1); }, 1));
  EXPECT_EQ(executor.waiting(), 1u);
  bool refused_ran = false;
  EXPECT_FALSE(executor.TrySchedule([&] { refused_ran = true; }, 1));
  release.Notify();
  executor.Stop();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_FALSE(refused_ran);
}

TEST(RelayExecutorTest, ZeroQueueStillUsesIdleThreads) {
  RelayExecutor executor(1);
  absl::Notification done;
  // An idle thread takes the task even with no queue slots.
  bool accepted = false;
  for (int i = 0; i < 10000 && !accepted; ++i) {  // until the thread has started waiting
    accepted = executor.TrySchedule([&] { done.Notify(); }, 0);
    if (!accepted) absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_TRUE(accepted);
  done.WaitForNotification();
}

}  // namespace
}  // namespace moeserve::router
