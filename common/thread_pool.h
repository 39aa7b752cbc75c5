#ifndef MOESERVE_COMMON_THREAD_POOL_H_
#define MOESERVE_COMMON_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace moeserve {

// A fixed set of threads that run one parallel-for at a time. The calling thread takes part, so a
// pool of N threads owns N-1 helper threads. ParallelFor is not reentrant and must be called from
// one thread at a time (the engine thread); that is the engine's concurrency model (STYLE.md).
//
// A decode step runs hundreds of short parallel regions (tens of microseconds each), so waking
// sleeping threads through a condition variable for each would cost as much as the work. Helpers
// therefore spin on an atomic job counter for a short while (kSpinMicros) after each job before
// they sleep, and the caller spins for their completion; an idle pool sleeps.
class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n), each at least `grain` long (or
  // all of n), up to 4 per thread. Threads take chunks in order from a shared counter, so a descheduled thread
  // delays the region by one chunk, not by a fixed share. Returns once every chunk has run.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Runs fn(thread_index) on every thread (index 0 is the caller) and waits for all.
  void RunOnAll(const std::function<void(int)>& fn);

  // How long a helper spins for the next job before it sleeps.
  static constexpr int64_t kSpinMicros = 50;

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> threads_;
  // The job: published by a release increment of generation_, read after an acquire load of it.
  std::atomic<const std::function<void(int)>*> job_{nullptr};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // helpers still running the current job
  std::atomic<int> sleepers_{0};  // helpers asleep (or about to be) on work_cv_
  std::atomic<bool> stop_{false};
  // common/mutex.h rather than absl::Mutex, so the engine's parallel loops run under TSan.
  Mutex mu_;
  CondVar work_cv_;  // a new job (generation_) or stop_; waited on only after spinning
};

// Threads to use by default: the hardware concurrency, at least 1.
int DefaultThreadCount();

}  // namespace moeserve

#endif  // MOESERVE_COMMON_THREAD_POOL_H_
