#ifndef MOESERVE_COMMON_SIGNALS_H_
#define MOESERVE_COMMON_SIGNALS_H_

#include <signal.h>
#include <time.h>

namespace moeserve {

// How every service binary waits for SIGINT/SIGTERM. Construct it first thing in main, before
// any thread starts, so every thread inherits the blocked mask and only Wait() receives the
// signals (no async-signal-safety concerns, no polling).
class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  // Blocks until SIGINT or SIGTERM arrives; returns its number.
  int Wait() {
    int signal_number = 0;
    sigwait(&set_, &signal_number);
    return signal_number;
  }
  // Like Wait, but gives up after `millis` milliseconds: the signal's number, or 0.
  int WaitFor(int millis) {
    timespec timeout{millis / 1000, static_cast<long>(millis % 1000) * 1000000L};
    const int signal_number = sigtimedwait(&set_, nullptr, &timeout);
    return signal_number > 0 ? signal_number : 0;
  }

 private:
  sigset_t set_;
};

}  // namespace moeserve

#endif  // MOESERVE_COMMON_SIGNALS_H_
