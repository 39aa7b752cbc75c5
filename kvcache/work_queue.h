#ifndef MOESERVE_KVCACHE_WORK_QUEUE_H_
#define MOESERVE_KVCACHE_WORK_QUEUE_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace moeserve::kvcache {

// A few threads that run blocking tasks (store I/O) so gRPC callback threads never block.
// Tasks run in submission order per thread, concurrently across threads. Thread-safe.
// The destructor (or Stop) runs every task already submitted, then joins.
class WorkQueue {
 public:
  explicit WorkQueue(int num_threads);
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task`. After Stop, runs it on the calling thread instead.
  void Submit(std::function<void()> task);
  // Drains the queue and joins the threads. Idempotent.
  void Stop();

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_WORK_QUEUE_H_
