// moeserve-worker: the attention side of the model (roles prefill, decode or both).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/drain.h"
#include "common/log.h"
#include "common/signals.h"
#include "worker/worker_server.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<absl::Duration> drain = moeserve::TakeDrainTimeoutFlag(&args);
  absl::StatusOr<moeserve::worker::WorkerConfig> config =
      drain.ok() ? moeserve::worker::ParseWorkerFlags(args)
                 : absl::StatusOr<moeserve::worker::WorkerConfig>(drain.status());
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
  moeserve::worker::WorkerServer* s = server->get();
  return moeserve::ServeUntilDrained(stop, *drain, "moeserve-worker",
                                     {[s] { s->StartDrain(); }, [s] { return s->Idle(); },
                                      [s] { s->Shutdown(); }});
}
