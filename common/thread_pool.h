#ifndef MOESERVE_COMMON_THREAD_POOL_H_
#define MOESERVE_COMMON_THREAD_POOL_H_

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
class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n); chunks are at least `grain` long.
  // Returns once every chunk has run.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Runs fn(thread_index) on every thread (index 0 is the caller) and waits for all.
  void RunOnAll(const std::function<void(int)>& fn);

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> threads_;
  // common/mutex.h rather than absl::Mutex, so the engine's parallel loops run under TSan.
  Mutex mu_;
  CondVar work_cv_;  // a new job (generation_) or stop_
  CondVar done_cv_;  // pending_ reached 0
  const std::function<void(int)>* job_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

// Threads to use by default: the hardware concurrency, at least 1.
int DefaultThreadCount();

}  // namespace moeserve

#endif  // MOESERVE_COMMON_THREAD_POOL_H_
