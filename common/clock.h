#ifndef MOESERVE_COMMON_CLOCK_H_
#define MOESERVE_COMMON_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace moeserve {

// The source of "now" for anything that expires or schedules (leases, eviction, timeouts), injected
// so tests can move time by hand (tests/testing/fake_clock.h) instead of sleeping.
// Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// Wall-clock time (absl::Now()).
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace moeserve

#endif  // MOESERVE_COMMON_CLOCK_H_
