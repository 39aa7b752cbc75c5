#ifndef MOESERVE_COMMON_MUTEX_H_
#define MOESERVE_COMMON_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace moeserve {

// A std::mutex with absl's thread-safety annotations, so ABSL_GUARDED_BY(mu_) members keep being
// checked by clang's -Wthread-safety. Why not absl::Mutex: Debian's abseil is built without
// ThreadSanitizer, so TSan cannot see absl::Mutex's synchronisation and reports every access
// guarded by one as a race (docs/DESIGN-NOTES.md); std::mutex is pthread-based, and TSan
// intercepts pthreads. Use it for state shared by threads that the tsan job runs.
class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A std::condition_variable for a Mutex. The waits take the condition as a predicate evaluated
// with the lock held, like absl::Mutex::Await, so a caller cannot forget the loop around a
// spurious wake-up. Whoever changes the state the predicate reads notifies (after or while
// holding the lock).
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Blocks until pred() holds; `mu` is held on entry and on return.
  template <typename Predicate>
  void Wait(Mutex* mu, Predicate pred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock, pred);
    lock.release();  // the caller's MutexLock still owns it
  }

  // As Wait, for at most `timeout`; returns pred() (false: timed out).
  template <typename Predicate>
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout, Predicate pred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool ok = cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), pred);
    lock.release();
    return ok;
  }

  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace moeserve

#endif  // MOESERVE_COMMON_MUTEX_H_
