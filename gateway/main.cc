// moeserve-gateway: the OpenAI-compatible HTTP API and the gRPC Inference service in front of
// the router (see gateway/gateway_server.h and gateway/gateway_flags.h).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/drain.h"
#include "common/log.h"
#include "common/signals.h"
#include "gateway/gateway_flags.h"
#include "gateway/gateway_server.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<absl::Duration> drain = moeserve::TakeDrainTimeoutFlag(&args);
  absl::StatusOr<moeserve::gateway::GatewayConfig> config =
      drain.ok() ? moeserve::gateway::ParseFlags(args)
                 : absl::StatusOr<moeserve::gateway::GatewayConfig>(drain.status());
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
  moeserve::gateway::GatewayServer* s = server->get();
  return moeserve::ServeUntilDrained(stop, *drain, "moeserve-gateway",
                                     {[s] { s->StartDrain(); }, [s] { return s->Idle(); },
                                      [s] { s->Shutdown(); }});
}
