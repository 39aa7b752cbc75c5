#include "router/relay_executor.h"

#include <algorithm>
#include <utility>

namespace moeserve::router {

RelayExecutor::RelayExecutor(int num_threads, std::function<void(size_t)> on_depth)
    : on_depth_(std::move(on_depth)) {
  for (int i = 0; i < std::max(num_threads, 1); ++i) threads_.emplace_back([this] { Loop(); });
}

RelayExecutor::~RelayExecutor() { Stop(); }

void RelayExecutor::PushLocked(std::function<void()> task, int32_t priority) {
  queue_.push(Task{priority, next_seq_++, std::move(task)});
  if (on_depth_) on_depth_(queue_.size());
  cv_.notify_one();
}

void RelayExecutor::Schedule(std::function<void()> task, int32_t priority) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      PushLocked(std::move(task), priority);
      return;
    }
  }
  task();
}

bool RelayExecutor::TrySchedule(std::function<void()> task, size_t max_waiting, int32_t priority) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      // Tasks beyond the idle threads wait; at most max_waiting of them.
      if (queue_.size() >= idle_ + max_waiting) return false;
      PushLocked(std::move(task), priority);
      return true;
    }
  }
  task();
  return true;
}

size_t RelayExecutor::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

size_t RelayExecutor::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size() > idle_ ? queue_.size() - idle_ : 0;
}

void RelayExecutor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void RelayExecutor::Loop() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++idle_;
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      --idle_;
      if (queue_.empty()) return;  // stopped and drained
      // top() is const: the task is moved out of the element about to be popped.
      task = std::move(const_cast<Task&>(queue_.top()).run);
      queue_.pop();
      if (on_depth_) on_depth_(queue_.size());
    }
    task();
  }
}

}  // namespace moeserve::router
