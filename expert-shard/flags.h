#ifndef MOESERVE_EXPERT_SHARD_FLAGS_H_
#define MOESERVE_EXPERT_SHARD_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "expert-shard/expert_shard_server.h"

namespace moeserve::expert_shard {

inline constexpr char kShardUsage[] =
    "usage: moeserve-expert-shard --model DIR [--port N] [--host H]\n"
    "         (--shard-id I | --shard-id-from-hostname true) [--num-shards N]\n"
    "         [--placement SPEC] [--compute-dtype bf16|f32] [--threads N] [--metrics-port N]\n"
    "         [--cuda-device N] [--backend cuda[:N]|cpu[:N]]\n"
    "  --cuda-device: the GPU of this shard's NCCL rank when a worker uses --expert-transport nccl.\n"
    "  --backend: where the expert products run (their weights uploaded there); default the host.\n"
    "  --shard-id-from-hostname true takes I from the hostname's trailing -I (a StatefulSet\n"
    "  pod's ordinal: expert-shard-3 is shard 3).\n";

// Parses the moeserve-expert-shard flags (`--name value` or `--name=value`), see kShardUsage.
// `hostname` is only read for --shard-id-from-hostname true (main passes gethostname()).
// InvalidArgument naming the flag for unknown flags, missing values and bad numbers; --model is
// required; --shard-id and --shard-id-from-hostname true exclude each other.
absl::StatusOr<ShardConfig> ParseFlags(int argc, char** argv, const std::string& hostname = "");

// The ordinal at the end of a StatefulSet pod's hostname: "expert-shard-12" -> 12. Any domain
// part ("expert-shard-2.expert-shard.ns.svc") is ignored. InvalidArgument when the first label
// does not end in -<digits>.
absl::StatusOr<int> ShardIdFromHostname(absl::string_view hostname);

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_FLAGS_H_
