// moeserve-expert-shard: serves a slice of a model's routed experts over gRPC.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/drain.h"
#include "common/log.h"
#include "common/signals.h"
#include "expert-shard/expert_shard_server.h"
#include "expert-shard/flags.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);  // with argv[0], as ParseFlags wants
  absl::StatusOr<absl::Duration> drain = moeserve::TakeDrainTimeoutFlag(&args);
  std::vector<char*> rest;
  for (std::string& a : args) rest.push_back(a.data());
  char hostname[256] = {};
  if (gethostname(hostname, sizeof(hostname) - 1) != 0) hostname[0] = '\0';
  absl::StatusOr<moeserve::expert_shard::ShardConfig> config =
      drain.ok() ? moeserve::expert_shard::ParseFlags(static_cast<int>(rest.size()), rest.data(),
                                                      hostname)
                 : absl::StatusOr<moeserve::expert_shard::ShardConfig>(drain.status());
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
  moeserve::expert_shard::ExpertShardServer* s = server->get();
  return moeserve::ServeUntilDrained(stop, *drain, "moeserve-expert-shard",
                                     {[s] { s->StartDrain(); }, [] { return true; },
                                      [s] { s->Shutdown(); }});
}
