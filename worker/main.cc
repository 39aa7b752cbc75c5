// moeserve-worker: the attention side of the model (roles prefill, decode or both).
#include <csignal>
#include <thread>

#include "common/log.h"
#include "worker/worker_server.h"

namespace {
volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }
}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<moeserve::worker::WorkerConfig> config =
      moeserve::worker::ParseWorkerFlags(std::vector<std::string>(argv + 1, argv + argc));
  if (!config.ok()) {
    moeserve::LogError(config.status());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<moeserve::worker::WorkerServer>> server =
      moeserve::worker::WorkerServer::Create(*config);
  if (!server.ok()) {
    moeserve::LogError(server.status());
    return 1;
  }
  moeserve::LogInfo("worker listening on 127.0.0.1:" + std::to_string((*server)->Port()));
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  (*server)->Shutdown();
  return 0;
}
