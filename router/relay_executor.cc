#include "router/relay_executor.h"

#include <algorithm>
#include <utility>

namespace moeserve::router {

RelayExecutor::RelayExecutor(int num_threads) {
  for (int i = 0; i < std::max(num_threads, 1); ++i) threads_.emplace_back([this] { Loop(); });
}

RelayExecutor::~RelayExecutor() { Stop(); }

void RelayExecutor::Schedule(std::function<void()> task) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      queue_.push_back(std::move(task));
      return;
    }
  }
  task();
}

bool RelayExecutor::TrySchedule(std::function<void()> task, size_t max_waiting) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      // Tasks beyond the idle threads wait; at most max_waiting of them.
      if (queue_.size() >= idle_ + max_waiting) return false;
      queue_.push_back(std::move(task));
      return true;
    }
  }
  task();
  return true;
}

size_t RelayExecutor::waiting() const {
  absl::MutexLock lock(&mu_);
  return queue_.size() > idle_ ? queue_.size() - idle_ : 0;
}

void RelayExecutor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void RelayExecutor::Loop() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      ++idle_;
      mu_.Await(absl::Condition(
          +[](RelayExecutor* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
            return e->stop_ || !e->queue_.empty();
          },
          this));
      --idle_;
      if (queue_.empty()) return;  // stopped and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace moeserve::router
