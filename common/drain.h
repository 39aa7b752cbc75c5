#ifndef MOESERVE_COMMON_DRAIN_H_
#define MOESERVE_COMMON_DRAIN_H_

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/signals.h"

namespace moeserve {

// Graceful drain, shared by every service binary (issue 7). On the first SIGTERM/SIGINT a
// service stops being ready (grpc.health.v1 NOT_SERVING, the gateway's /readyz 503), refuses new
// work with UNAVAILABLE, lets the work in flight finish for up to --drain-timeout-s seconds,
// then shuts down and exits 0. A second signal during the drain exits at once (status 1).

inline constexpr int kDefaultDrainTimeoutSeconds = 30;
inline constexpr char kDrainFlagUsage[] =
    "  --drain-timeout-s N  on SIGTERM, finish requests in flight for up to N s (default 30;\n"
    "                       0: stop at once); a second signal exits immediately\n";

// Removes `--drain-timeout-s N` / `--drain-timeout-s=N` from `args` (so each service's own
// parser never sees it) and returns its value: the default when absent, INVALID_ARGUMENT when
// it is not a whole number of seconds in [0, 86400].
inline absl::StatusOr<absl::Duration> TakeDrainTimeoutFlag(std::vector<std::string>* args) {
  absl::Duration timeout = absl::Seconds(kDefaultDrainTimeoutSeconds);
  for (size_t i = 0; i < args->size();) {
    absl::string_view arg = (*args)[i];
    std::string value;
    size_t used = 0;
    if (arg == "--drain-timeout-s") {
      if (i + 1 >= args->size()) {
        return absl::InvalidArgumentError("--drain-timeout-s needs a value");
      }
      value = (*args)[i + 1];
      used = 2;
    } else if (absl::ConsumePrefix(&arg, "--drain-timeout-s=")) {
      value = std::string(arg);
      used = 1;
    } else {
      ++i;
      continue;
    }
    int64_t seconds = 0;
    if (!absl::SimpleAtoi(value, &seconds) || seconds < 0 || seconds > 86400) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--drain-timeout-s: '", value, "' is not a whole number of seconds in [0, 86400]"));
    }
    timeout = absl::Seconds(seconds);
    args->erase(args->begin() + static_cast<std::ptrdiff_t>(i),
                args->begin() + static_cast<std::ptrdiff_t>(i + used));
  }
  return timeout;
}

// What a service does in each phase of its stop.
struct DrainHooks {
  std::function<void()> begin;  // not ready, refuse new work; must not block
  std::function<bool()> idle;   // true once no accepted work is left (polled)
  std::function<void()> shutdown;
};

// Waits for the first stop signal, drains for up to `timeout`, shuts down; returns main's exit
// status (0). A second signal while draining ends the process immediately with status 1.
inline int ServeUntilDrained(StopSignals& stop, absl::Duration timeout, const std::string& name,
                             const DrainHooks& hooks) {
  const int first = stop.Wait();
  const absl::Time deadline = absl::Now() + timeout;
  LogInfo(absl::StrCat(name, ": signal ", first, ": draining for up to ",
                       absl::FormatDuration(timeout)));
  hooks.begin();
  bool drained = false;
  while (!(drained = hooks.idle()) && absl::Now() < deadline) {
    const absl::Duration left = deadline - absl::Now();
    const int ms = static_cast<int>(
        absl::ToInt64Milliseconds(std::min(left, absl::Milliseconds(50))));
    if (const int second = stop.WaitFor(std::max(ms, 1)); second != 0) {
      LogInfo(absl::StrCat(name, ": second signal ", second, ": exiting now"));
      std::_Exit(1);
    }
  }
  LogInfo(absl::StrCat(name, drained ? ": drained, shutting down"
                                     : ": drain timeout passed, cancelling what is left"));
  hooks.shutdown();
  return 0;
}

}  // namespace moeserve

#endif  // MOESERVE_COMMON_DRAIN_H_
