#ifndef MOESERVE_TESTS_TESTING_FAKE_CLOCK_H_
#define MOESERVE_TESTS_TESTING_FAKE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/mutex.h"

namespace moeserve::testing {

// A Clock that moves only when the test says so. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000)) : now_(start) {}

  absl::Time Now() const override {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable Mutex mu_;  // common/mutex.h: visible to ThreadSanitizer (the tsan job uses this clock)
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_TESTING_FAKE_CLOCK_H_
