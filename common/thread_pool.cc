#include "common/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace moeserve {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

using SteadyClock = std::chrono::steady_clock;

// Spins until pred() or `micros` elapsed; returns pred(). Reads the clock every 64 polls.
template <typename Pred>
bool SpinFor(int64_t micros, Pred pred) {
  const SteadyClock::time_point until = SteadyClock::now() + std::chrono::microseconds(micros);
  for (int i = 1;; ++i) {
    if (pred()) return true;
    CpuRelax();
    if (i % 64 == 0 && SteadyClock::now() >= until) return pred();
  }
}

}  // namespace

int DefaultThreadCount() { return std::max(1u, std::thread::hardware_concurrency()); }

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) threads_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    MutexLock lock(&mu_);
    stop_.store(true);
  }
  work_cv_.NotifyAll();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  while (true) {
    auto has_work = [&] { return stop_.load() || generation_.load() != seen; };
    if (!SpinFor(kSpinMicros, has_work)) {
      // Dekker-style hand-shake with RunOnAll (all seq_cst): either it sees sleepers_ > 0 and
      // notifies under mu_, or this thread's predicate check below sees the new generation.
      MutexLock lock(&mu_);
      sleepers_.fetch_add(1);
      work_cv_.Wait(&mu_, has_work);
      sleepers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = generation_.load();
    (*job_.load())(index);
    pending_.fetch_sub(1);
  }
}

void ThreadPool::RunOnAll(const std::function<void(int)>& fn) {
  if (num_threads_ == 1) {
    fn(0);
    return;
  }
  job_.store(&fn);
  pending_.store(num_threads_ - 1);
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) {
    MutexLock lock(&mu_);
    work_cv_.NotifyAll();
  }
  fn(0);
  // Helpers normally finish within microseconds of the caller; a descheduled one may take a
  // time slice, so stop burning the core after a while.
  if (!SpinFor(kSpinMicros, [&] { return pending_.load() == 0; })) {
    while (pending_.load() != 0) std::this_thread::yield();
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  // Up to 4 chunks per thread, taken in order from a shared counter.
  const int64_t chunks = std::min<int64_t>(int64_t{4} * num_threads_, std::max<int64_t>(1, n / grain));
  if (chunks <= 1 || num_threads_ == 1) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  RunOnAll([&](int) {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
      fn(n * c / chunks, n * (c + 1) / chunks);
    }
  });
}

}  // namespace moeserve
