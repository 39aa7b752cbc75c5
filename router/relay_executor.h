#ifndef MOESERVE_ROUTER_RELAY_EXECUTOR_H_
#define MOESERVE_ROUTER_RELAY_EXECUTOR_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>


namespace moeserve::router {

// A fixed set of relay threads that run the blocking part of each routed request, so that gRPC
// callback threads never block. A request holds a thread for its whole life (prefill + decode), so
// `num_threads` bounds the requests relayed at once; later ones wait in priority order (lower
// value first, as vLLM orders priorities), equal priorities first-come first-served.
// `on_depth` (optional) is told the number of waiting tasks whenever it changes, under the
// executor's lock: it must be quick and must not call back into the executor.
// Thread-safe.
class RelayExecutor {
 public:
  explicit RelayExecutor(int num_threads, std::function<void(size_t)> on_depth = nullptr);
  ~RelayExecutor();  // Stop()
  RelayExecutor(const RelayExecutor&) = delete;
  RelayExecutor& operator=(const RelayExecutor&) = delete;

  // Runs `task` on a relay thread. Tasks scheduled after Stop() run on the calling thread.
  void Schedule(std::function<void()> task, int32_t priority = 0);
  // Like Schedule, but refuses (false, `task` not run) when every thread is busy and
  // `max_waiting` tasks already wait: the router's bounded queue (--max-queue).
  bool TrySchedule(std::function<void()> task, size_t max_waiting, int32_t priority = 0);
  // Tasks in the queue (including those an idle thread is about to take).
  size_t queued() const;
  // Tasks waiting for a thread: the queue beyond the idle threads.
  size_t waiting() const;
  // Runs the queued tasks to completion, then joins the threads. Idempotent.
  void Stop();

 private:
  struct Task {
    int32_t priority;
    uint64_t seq;  // arrival order among equal priorities
    std::function<void()> run;
  };
  struct Later {  // the priority_queue's "less": the task that should run later
    bool operator()(const Task& a, const Task& b) const {
      return a.priority != b.priority ? a.priority > b.priority : a.seq > b.seq;
    }
  };

  void Loop();
  void PushLocked(std::function<void()> task, int32_t priority);

  const std::function<void(size_t)> on_depth_;
  // std::mutex rather than absl::Mutex: Debian's abseil is not built with ThreadSanitizer, so
  // TSan cannot see its synchronisation and reports every hand-over of a task as a race; the
  // pthread-based std::mutex is intercepted. Everything below is guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;  // notified when a task arrives or Stop() is called
  std::priority_queue<Task, std::vector<Task>, Later> queue_;
  uint64_t next_seq_ = 0;
  size_t idle_ = 0;  // threads waiting for a task
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_RELAY_EXECUTOR_H_
