#ifndef MOESERVE_COMMON_PROCESS_H_
#define MOESERVE_COMMON_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

// Small helpers for tools that start and watch local processes (`moeserve up`, bench/serve).
namespace moeserve {

// A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read it back, close), and
// that this process has not handed out before (thread-safe).
absl::StatusOr<int> FreeLoopbackPort();

// True when something accepts TCP connections on 127.0.0.1:port.
bool LoopbackPortAccepts(int port);

// The folder of the running executable ("." if /proc/self/exe cannot be read).
std::string ExecutableDir();

// fork + execvp(argv) with stdout and stderr sent to `log_path` (created, then truncated or,
// with `append`, appended to: a restarted process keeps its predecessor's log above its own).
// Returns the child's pid; the caller waits for it.
absl::StatusOr<pid_t> SpawnWithLog(const std::vector<std::string>& argv,
                                   const std::string& log_path, bool append = false);

}  // namespace moeserve

#endif  // MOESERVE_COMMON_PROCESS_H_
