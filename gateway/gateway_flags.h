#ifndef MOESERVE_GATEWAY_GATEWAY_FLAGS_H_
#define MOESERVE_GATEWAY_GATEWAY_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/gateway_server.h"

namespace moeserve::gateway {

inline constexpr char kGatewayUsage[] =
    "usage: moeserve-gateway --model DIR --router HOST:PORT [--model-name NAME] [--host H]\n"
    "         [--port N] [--grpc-port N] [--http-threads N] [--max-tokens-default N]\n"
    "         [--router-timeout-s N] [--price-table FILE] [--metrics-port N]\n"
    "         [--reject-logprobs-for-reasoner] [--api-keys FILE] [--sse-keepalive-s SECONDS]\n"
    "         [--drain-timeout-s N] [--stream-resume-grace-s SECONDS]\n"
    "         [--stream-resume-max-bytes N] [--stream-resume-max-detached N]\n"
    "         [--redis HOST:PORT] [--batch-concurrency N] [--batch-priority N]\n"
    "         [--batch-max-file-mb N] [--batch-max-requests N]\n";

// Parses the flags (without argv[0]); `--name value` and `--name=value` both work.
// INVALID_ARGUMENT naming the bad flag.
absl::StatusOr<GatewayConfig> ParseFlags(const std::vector<std::string>& args);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_GATEWAY_FLAGS_H_
