#include "common/log.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace moeserve {

void LogLine(const char* level, const std::string& message) {
  std::string line = absl::StrCat(level, " ", message, "\n");
  ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

namespace internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  stream_ << file << ":" << line << ": CHECK failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  LogLine("F", stream_.str());
  std::abort();
}

}  // namespace internal
}  // namespace moeserve
