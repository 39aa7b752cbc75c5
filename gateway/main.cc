// moeserve-gateway: the OpenAI-compatible HTTP API and the gRPC Inference service in front of
// the router (see gateway/gateway_server.h and gateway/gateway_flags.h).
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
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
  // Block the stop signals before any thread starts, so that only sigwait below receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  auto server = moeserve::gateway::GatewayServer::Create(*config);
  if (!server.ok()) {
    moeserve::LogError(server.status());
    return 1;
  }
  moeserve::LogInfo(absl::StrCat("moeserve-gateway serving '", (*server)->model().name,
                                 "': http port ", (*server)->HttpPort(), ", grpc port ",
                                 (*server)->GrpcPort()));
  int signal_number = 0;
  sigwait(&stop, &signal_number);
  moeserve::LogInfo(absl::StrCat("signal ", signal_number, ": shutting down"));
  (*server)->Shutdown();
  return 0;
}
