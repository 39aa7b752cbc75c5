// libFuzzer target: config.json parsing (engine/config.h ParseModelConfig), which every worker
// and expert shard runs on the model folder. Properties: no crash; errors carry a message; an
// accepted config has positive sizes, experts per token within the routed experts, and its
// derived values (IsMoeLayer for every layer, the softmax scale) compute without UB.
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<moeserve::engine::ModelConfig> c =
      moeserve::engine::ParseModelConfig(std::string(moeserve::fuzz::AsText(data, size)));
  if (!c.ok()) {
    MOESERVE_FUZZ_ASSERT(!c.status().message().empty(), "an error without a message");
    return 0;
  }
  MOESERVE_FUZZ_ASSERT(c->vocab_size > 0 && c->hidden_size > 0 && c->num_hidden_layers > 0 &&
                           c->num_attention_heads > 0 && c->max_position_embeddings > 0,
                       "a non-positive size accepted");
  MOESERVE_FUZZ_ASSERT(c->n_routed_experts == 0 ||
                           (c->num_experts_per_tok > 0 &&
                            c->num_experts_per_tok <= c->n_routed_experts),
                       absl::StrCat(c->num_experts_per_tok, " of ", c->n_routed_experts));
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c->num_hidden_layers && l < 4096; ++l) moe_layers += c->IsMoeLayer(l);
  MOESERVE_FUZZ_ASSERT(moe_layers >= 0, "");
  const double scale = c->SoftmaxScale();
  MOESERVE_FUZZ_ASSERT(std::isfinite(scale) && scale > 0, absl::StrCat("softmax scale ", scale));
  return 0;
}
