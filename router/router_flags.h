#ifndef MOESERVE_ROUTER_ROUTER_FLAGS_H_
#define MOESERVE_ROUTER_ROUTER_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "router/router_server.h"

namespace moeserve::router {

inline constexpr char kRouterUsage[] =
    "usage: moeserve-router --prefill WORKER[,WORKER...] --decode WORKER[,...]\n"
    "                       [--port N] [--host ADDR] [--block-tokens N] [--retry-attempts N]\n"
    "                       [--alpha X] [--load-cost-tokens N] [--poll-ms N] [--resolve-ms N]\n"
    "                       [--relay-threads N] [--max-queue N] [--metrics-port N]\n"
    "                       [--drain-timeout-s N]\n"
    "  WORKER is host:port, or dns:NAME:PORT to discover workers: NAME is resolved again every\n"
    "  --resolve-ms (default 5000) and each of its addresses is a worker at PORT (a Kubernetes\n"
    "  headless Service lists a Deployment's ready pods). A worker listed in both --prefill and\n"
    "  --decode serves both phases.\n"
    "  --relay-threads bounds the requests relayed at once (default 64); --max-queue bounds\n"
    "  those waiting for a relay thread (default 512), beyond which requests are refused\n"
    "  with RESOURCE_EXHAUSTED (the gateway's 429).\n";

// Parses `--name value` / `--name=value` flags (args excludes the program name). Unknown flags,
// missing or malformed values are INVALID_ARGUMENT naming the flag.
absl::StatusOr<RouterConfig> ParseFlags(const std::vector<std::string>& args);

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_ROUTER_FLAGS_H_
