#ifndef MOESERVE_EXPERT_SHARD_FLAGS_H_
#define MOESERVE_EXPERT_SHARD_FLAGS_H_

#include "absl/status/statusor.h"
#include "expert-shard/expert_shard_server.h"

namespace moeserve::expert_shard {

// Parses the moeserve-expert-shard flags (`--name value` or `--name=value`):
//   --model DIR --port N --shard-id I --num-shards N [--placement SPEC]
//   [--compute-dtype bf16|f32] [--threads N] [--host H]
// InvalidArgument naming the flag for unknown flags, missing values and bad numbers; --model is
// required.
absl::StatusOr<ShardConfig> ParseFlags(int argc, char** argv);

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_FLAGS_H_
