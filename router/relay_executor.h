#ifndef MOESERVE_ROUTER_RELAY_EXECUTOR_H_
#define MOESERVE_ROUTER_RELAY_EXECUTOR_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace moeserve::router {

// A fixed set of relay threads that run the blocking part of each routed request, so that gRPC
// callback threads never block. A request holds a thread for its whole life (prefill + decode), so
// `num_threads` bounds the requests relayed at once; later ones wait in FIFO order.
// Thread-safe.
class RelayExecutor {
 public:
  explicit RelayExecutor(int num_threads);
  ~RelayExecutor();  // Stop()
  RelayExecutor(const RelayExecutor&) = delete;
  RelayExecutor& operator=(const RelayExecutor&) = delete;

  // Runs `task` on a relay thread. Tasks scheduled after Stop() run on the calling thread.
  void Schedule(std::function<void()> task);
  // Like Schedule, but refuses (false, `task` not run) when every thread is busy and
  // `max_waiting` tasks already wait: the router's bounded queue (--max-queue).
  bool TrySchedule(std::function<void()> task, size_t max_waiting);
  // Tasks waiting for a thread.
  size_t waiting() const;
  // Runs the queued tasks to completion, then joins the threads. Idempotent.
  void Stop();

 private:
  void Loop();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;  // threads waiting for a task
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_RELAY_EXECUTOR_H_
