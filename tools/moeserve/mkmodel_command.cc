#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::cli {

int RunMkmodel(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = Flags::Parse(
      args, {"out", "preset", "seed", "dtype", "tokenizer-dir", "num-layers", "shard-mb"},
      {"no-weights"});
  if (!flags.ok()) {
    LogError(flags.status());
    return 2;
  }
  MkmodelOptions o;
  o.out_dir = flags->Get("out").value_or("");
  o.preset = flags->Get("preset").value_or("tiny");
  o.dtype = flags->Get("dtype").value_or("bf16");
  o.tokenizer_dir = flags->Get("tokenizer-dir").value_or("");
  o.weights = !flags->Has("no-weights");
  absl::StatusOr<int64_t> seed = flags->GetInt("seed", 0);
  absl::StatusOr<int64_t> layers = flags->GetInt("num-layers", 0);
  absl::StatusOr<int64_t> shard_mb = flags->GetInt("shard-mb", 2048);
  for (const absl::Status& s : {seed.status(), layers.status(), shard_mb.status()}) {
    if (!s.ok()) {
      LogError(s);
      return 2;
    }
  }
  o.seed = static_cast<uint64_t>(*seed);
  o.num_layers = *layers;
  o.shard_bytes = std::max<int64_t>(1, *shard_mb) << 20;
  absl::Status st = MakeModel(o);
  if (!st.ok()) {
    LogError(st);
    return st.code() == absl::StatusCode::kInvalidArgument ||
                   st.code() == absl::StatusCode::kNotFound
               ? 2
               : 1;
  }
  std::cout << "wrote " << o.preset << " model to " << o.out_dir << "\n";
  return 0;
}

}  // namespace moeserve::cli
