// moeserve-kvcache: the KV-cache service (see kvcache/kvcache_server.h and
// kvcache/kvcache_flags.h).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/drain.h"
#include "common/log.h"
#include "common/signals.h"
#include "kvcache/kvcache_flags.h"
#include "kvcache/kvcache_server.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<absl::Duration> drain = moeserve::TakeDrainTimeoutFlag(&args);
  absl::StatusOr<moeserve::kvcache::KvCacheServerConfig> config =
      drain.ok() ? moeserve::kvcache::ParseFlags(args)
                 : absl::StatusOr<moeserve::kvcache::KvCacheServerConfig>(drain.status());
  if (!config.ok()) {
    moeserve::LogError(config.status());
    std::fputs(moeserve::kvcache::kKvCacheUsage, stderr);
    return 2;
  }
  moeserve::StopSignals stop;  // before any thread starts
  auto server = moeserve::kvcache::KvCacheServer::Create(*config);
  if (!server.ok()) {
    moeserve::LogError(server.status());
    return 1;
  }
  moeserve::LogInfo(absl::StrCat("moeserve-kvcache listening on port ", (*server)->Port(),
                                 ", metrics port ", (*server)->MetricsPort()));
  moeserve::kvcache::KvCacheServer* s = server->get();
  return moeserve::ServeUntilDrained(stop, *drain, "moeserve-kvcache",
                                     {[s] { s->StartDrain(); }, [] { return true; },
                                      [s] { s->Shutdown(); }});
}
