#include "router/relay_executor.h"

#include <algorithm>
#include <utility>

namespace moeserve::router {

RelayExecutor::RelayExecutor(int num_threads, std::function<void(size_t)> on_depth)
    : on_depth_(std::move(on_depth)) {
  for (int i = 0; i < std::max(num_threads, 1); ++i) threads_.emplace_back([this] { Loop(); });
}

RelayExecutor::~RelayExecutor() { Stop(); }

void RelayExecutor::Schedule(std::function<void()> task, int32_t priority) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      queue_.push(Task{priority, next_seq_++, std::move(task)});
      if (on_depth_) on_depth_(queue_.size());
      cv_.notify_one();
      return;
    }
  }
  task();
}

size_t RelayExecutor::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
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
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
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
