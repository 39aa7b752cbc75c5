// moeserve-gateway: the OpenAI-compatible HTTP API and the gRPC Inference service in front of
// the router (see gateway/gateway_server.h and gateway/gateway_flags.h).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/signals.h"
#include "gateway/gateway_flags.h"
#include "gateway/gateway_server.h"

int main(int argc, char** argv) {
  absl::StatusOr<moeserve::gateway::GatewayConfig> config =
      moeserve::gateway::ParseFlags(std::vector<std::string>(argv + 1, argv + argc));
  if (!config.ok()) {
    moeserve::LogError(config.status());
    std::fputs(moeserve::gateway::kGatewayUsage, stderr);
    return 2;
  }
  moeserve::StopSignals stop;  // before any thread starts
  auto server = moeserve::gateway::GatewayServer::Create(*config);
  if (!server.ok()) {
    moeserve::LogError(server.status());
    return 1;
  }
  moeserve::LogInfo(absl::StrCat("moeserve-gateway serving '", (*server)->model().name,
                                 "': http port ", (*server)->HttpPort(), ", grpc port ",
                                 (*server)->GrpcPort(), ", metrics port ",
                                 (*server)->MetricsPort()));
  const int signal_number = stop.Wait();
  moeserve::LogInfo(absl::StrCat("signal ", signal_number, ": shutting down"));
  (*server)->Shutdown();
  return 0;
}
