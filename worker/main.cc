// moeserve-worker: the attention side of the model (roles prefill, decode or both).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/signals.h"
#include "worker/worker_server.h"

int main(int argc, char** argv) {
  absl::StatusOr<moeserve::worker::WorkerConfig> config =
      moeserve::worker::ParseWorkerFlags(std::vector<std::string>(argv + 1, argv + argc));
  if (!config.ok()) {
    moeserve::LogError(config.status());
    std::fputs(moeserve::worker::kWorkerUsage, stderr);
    return 2;
  }
  moeserve::StopSignals stop;  // before any thread starts
  absl::StatusOr<std::unique_ptr<moeserve::worker::WorkerServer>> server =
      moeserve::worker::WorkerServer::Create(*config);
  if (!server.ok()) {
    moeserve::LogError(server.status());
    return 1;
  }
  moeserve::LogInfo(absl::StrCat("worker listening on port ", (*server)->Port(), ", metrics port ",
                                 (*server)->MetricsPort()));
  const int signal_number = stop.Wait();
  moeserve::LogInfo(absl::StrCat("signal ", signal_number, ": shutting down"));
  (*server)->Shutdown();
  return 0;
}
