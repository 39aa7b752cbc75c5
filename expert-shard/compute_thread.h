#ifndef MOESERVE_EXPERT_SHARD_COMPUTE_THREAD_H_
#define MOESERVE_EXPERT_SHARD_COMPUTE_THREAD_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"

namespace moeserve::expert_shard {

// The one thread that owns a shard's model (STYLE.md concurrency rule 1): gRPC reactors post
// closures here and never compute in their callbacks. Closures run in posting order. The
// destructor runs everything already posted, then joins. Post is thread-safe.
class ComputeThread {
 public:
  ComputeThread();
  ~ComputeThread();
  ComputeThread(const ComputeThread&) = delete;
  ComputeThread& operator=(const ComputeThread&) = delete;

  void Post(std::function<void()> task);

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_COMPUTE_THREAD_H_
