#include "common/thread_pool.h"

#include <algorithm>

namespace moeserve {

int DefaultThreadCount() { return std::max(1u, std::thread::hardware_concurrency()); }

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) threads_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

namespace {
struct WakeArgs {
  const bool* stop;
  const uint64_t* generation;
  uint64_t seen;
};
bool ShouldWake(WakeArgs* a) { return *a->stop || *a->generation != a->seen; }
bool NoneLeft(int* pending) { return *pending == 0; }
}  // namespace

void ThreadPool::WorkerLoop(int index) {
  WakeArgs wake{&stop_, &generation_, 0};
  while (true) {
    const std::function<void(int)>* job = nullptr;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ShouldWake, &wake));
      if (stop_) return;
      wake.seen = generation_;
      job = job_;
    }
    (*job)(index);
    absl::MutexLock lock(&mu_);
    --pending_;
  }
}

void ThreadPool::RunOnAll(const std::function<void(int)>& fn) {
  if (num_threads_ == 1) {
    fn(0);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    job_ = &fn;
    pending_ = num_threads_ - 1;
    ++generation_;
  }
  fn(0);
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&NoneLeft, &pending_));
  job_ = nullptr;
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t chunks = std::min<int64_t>(num_threads_, (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  RunOnAll([&](int t) {
    if (t >= chunks) return;
    int64_t begin = n * t / chunks;
    int64_t end = n * (t + 1) / chunks;
    if (begin < end) fn(begin, end);
  });
}

}  // namespace moeserve
