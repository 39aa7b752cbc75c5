// moeserve-router: chooses prefill and decode workers and relays token streams (see
// router/router_server.h and router/router_flags.h).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/drain.h"
#include "common/log.h"
#include "common/signals.h"
#include "router/router_flags.h"
#include "router/router_server.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<absl::Duration> drain = moeserve::TakeDrainTimeoutFlag(&args);
  absl::StatusOr<moeserve::router::RouterConfig> config =
      drain.ok() ? moeserve::router::ParseFlags(args)
                 : absl::StatusOr<moeserve::router::RouterConfig>(drain.status());
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
  moeserve::router::RouterServer* s = server->get();
  return moeserve::ServeUntilDrained(stop, *drain, "moeserve-router",
                                     {[s] { s->StartDrain(); }, [s] { return s->Idle(); },
                                      [s] { s->Shutdown(); }});
}
