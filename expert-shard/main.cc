// moeserve-expert-shard: serves a slice of a model's routed experts over gRPC.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "common/log.h"
#include "common/signals.h"
#include "expert-shard/expert_shard_server.h"
#include "expert-shard/flags.h"

int main(int argc, char** argv) {
  char hostname[256] = {};
  if (gethostname(hostname, sizeof(hostname) - 1) != 0) hostname[0] = '\0';
  absl::StatusOr<moeserve::expert_shard::ShardConfig> config =
      moeserve::expert_shard::ParseFlags(argc, argv, hostname);
  if (!config.ok()) {
    moeserve::LogError(config.status());
    std::fputs(moeserve::expert_shard::kShardUsage, stderr);
    return 2;
  }
  moeserve::StopSignals stop;  // before gRPC starts its threads
  absl::StatusOr<std::unique_ptr<moeserve::expert_shard::ExpertShardServer>> server =
      moeserve::expert_shard::ExpertShardServer::Create(*config);
  if (!server.ok()) {
    moeserve::LogError(server.status());
    return 1;
  }
  stop.Wait();
  moeserve::LogInfo("expert shard stopping");
  (*server)->Shutdown();
  return 0;
}
