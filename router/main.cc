// moeserve-router: chooses prefill and decode workers and relays token streams (see
// router/router_server.h and router/router_flags.h).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/signals.h"
#include "router/router_flags.h"
#include "router/router_server.h"

int main(int argc, char** argv) {
  absl::StatusOr<moeserve::router::RouterConfig> config =
      moeserve::router::ParseFlags(std::vector<std::string>(argv + 1, argv + argc));
  if (!config.ok()) {
    moeserve::LogError(config.status());
    std::fputs(moeserve::router::kRouterUsage, stderr);
    return 2;
  }
  moeserve::StopSignals stop;  // before any thread starts
  auto server = moeserve::router::RouterServer::Create(*config);
  if (!server.ok()) {
    moeserve::LogError(server.status());
    return 1;
  }
  moeserve::LogInfo(absl::StrCat("moeserve-router listening on port ", (*server)->Port(),
                                 ", metrics port ", (*server)->MetricsPort()));
  const int signal_number = stop.Wait();
  moeserve::LogInfo(absl::StrCat("signal ", signal_number, ": shutting down"));
  (*server)->Shutdown();
  return 0;
}
