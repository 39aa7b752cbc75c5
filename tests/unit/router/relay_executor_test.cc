#include "router/relay_executor.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace moeserve::router {
namespace {

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
