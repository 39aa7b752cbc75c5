#ifndef MOESERVE_ROUTER_ROUTER_FLAGS_H_
#define MOESERVE_ROUTER_ROUTER_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "router/router_server.h"

namespace moeserve::router {

inline constexpr char kRouterUsage[] =
    "usage: moeserve-router --prefill host:port[,host:port...] --decode host:port[,...]\n"
    "                       [--port N] [--host ADDR] [--block-tokens N] [--retry-attempts N]\n"
    "                       [--alpha X] [--load-cost-tokens N] [--poll-ms N] [--relay-threads N]\n"
    "                       [--metrics-port N]\n"
    "  A worker listed in both --prefill and --decode serves both phases.\n";

// Parses `--name value` / `--name=value` flags (args excludes the program name). Unknown flags,
// missing or malformed values are INVALID_ARGUMENT naming the flag.
absl::StatusOr<RouterConfig> ParseFlags(const std::vector<std::string>& args);

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_ROUTER_FLAGS_H_
