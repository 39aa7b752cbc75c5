#ifndef MOESERVE_COMMON_LOG_H_
#define MOESERVE_COMMON_LOG_H_

#include <sstream>
#include <string>

#include "absl/status/status.h"

namespace moeserve {

// Writes one line to stderr (thread-safe: one write call per line).
void LogLine(const char* level, const std::string& message);
inline void LogInfo(const std::string& message) { LogLine("I", message); }
inline void LogError(const absl::Status& status) { LogLine("E", status.ToString()); }

namespace internal {
// Collects a message, then aborts in its destructor. Used by MOESERVE_CHECK.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};
}  // namespace internal

}  // namespace moeserve

// For programmer bugs and unrecoverable state only; never on request data (see STYLE.md).
#define MOESERVE_CHECK(cond) \
  if (cond) {                \
  } else                     \
    ::moeserve::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#ifdef NDEBUG
#define MOESERVE_DCHECK(cond) \
  if (true) {                 \
  } else                      \
    ::moeserve::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()
#else
#define MOESERVE_DCHECK(cond) MOESERVE_CHECK(cond)
#endif

#endif  // MOESERVE_COMMON_LOG_H_
