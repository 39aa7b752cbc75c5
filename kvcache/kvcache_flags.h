#ifndef MOESERVE_KVCACHE_KVCACHE_FLAGS_H_
#define MOESERVE_KVCACHE_KVCACHE_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcache/kvcache_server.h"

namespace moeserve::kvcache {

inline constexpr char kKvCacheUsage[] =
    "usage: moeserve-kvcache [--port N] [--host ADDR] [--redis host:port[,host:port...]]\n"
    "                        [--budget-mb N] [--lease-ttl-ms N] [--block-tokens N]\n"
    "                        [--max-block-mb N] [--threads N] [--metrics-port N]\n"
    "                        [--drain-timeout-s N]\n"
    "  --redis empty (the default) keeps blocks in process memory.\n";

// Parses `--name value` / `--name=value` flags (args excludes the program name). Unknown flags,
// missing or malformed values are INVALID_ARGUMENT naming the flag.
absl::StatusOr<KvCacheServerConfig> ParseFlags(const std::vector<std::string>& args);

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_KVCACHE_FLAGS_H_
