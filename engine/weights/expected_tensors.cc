// ExpectedTensors: the Hugging Face DeepSeek-V2/V3 tensor names and shapes for a config.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint.h"

namespace moeserve::engine {
namespace {

class Builder {
 public:
  explicit Builder(std::vector<ExpectedTensor>* out) : out_(out) {}

  void Add(std::string name, std::vector<int64_t> shape, bool quantizable, int64_t layer,
           std::optional<int64_t> expert = std::nullopt) {
    ExpectedTensor t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.quantizable = quantizable;
    t.layer = layer;
    t.expert = expert;
    out_->push_back(std::move(t));
  }
  // A Linear weight [out, in]; quantizable (F8 with block scales) in the published checkpoints.
  void Linear(std::string name, int64_t out, int64_t in, int64_t layer,
              std::optional<int64_t> expert = std::nullopt) {
    Add(std::move(name), {out, in}, /*quantizable=*/true, layer, expert);
  }

 private:
  std::vector<ExpectedTensor>* out_;
};

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> out;
  Builder b(&out);
  const int64_t hidden = c.hidden_size;
  const int64_t heads = c.num_attention_heads;
  b.Add("model.embed_tokens.weight", {c.vocab_size, hidden}, false, -1);

  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    b.Add(p + "input_layernorm.weight", {hidden}, false, i);
    b.Add(p + "post_attention_layernorm.weight", {hidden}, false, i);

    const std::string a = p + "self_attn.";
    if (c.q_lora_rank && *c.q_lora_rank > 0) {
      b.Linear(a + "q_a_proj.weight", *c.q_lora_rank, hidden, i);
      b.Add(a + "q_a_layernorm.weight", {*c.q_lora_rank}, false, i);
      b.Linear(a + "q_b_proj.weight", heads * c.q_head_dim(), *c.q_lora_rank, i);
    } else {
      b.Linear(a + "q_proj.weight", heads * c.q_head_dim(), hidden, i);
    }
    b.Linear(a + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, hidden, i);
    b.Add(a + "kv_a_layernorm.weight", {c.kv_lora_rank}, false, i);
    b.Linear(a + "kv_b_proj.weight", heads * (c.qk_nope_head_dim + c.v_head_dim),
             c.kv_lora_rank, i);
    b.Linear(a + "o_proj.weight", hidden, heads * c.v_head_dim, i);

    const std::string m = p + "mlp.";
    if (!c.IsMoeLayer(i)) {
      b.Linear(m + "gate_proj.weight", c.intermediate_size, hidden, i);
      b.Linear(m + "up_proj.weight", c.intermediate_size, hidden, i);
      b.Linear(m + "down_proj.weight", hidden, c.intermediate_size, i);
      continue;
    }
    // The router stays in high precision in the FP8 checkpoints.
    b.Add(m + "gate.weight", {c.n_routed_experts, hidden}, false, i);
    if (c.topk_method == TopkMethod::kNoauxTc) {
      b.Add(m + "gate.e_score_correction_bias", {c.n_routed_experts}, false, i);
    }
    const int64_t inter = c.moe_intermediate_size;
    for (int64_t j = 0; j < c.n_routed_experts; ++j) {
      const std::string e = absl::StrCat(m, "experts.", j, ".");
      b.Linear(e + "gate_proj.weight", inter, hidden, i, j);
      b.Linear(e + "up_proj.weight", inter, hidden, i, j);
      b.Linear(e + "down_proj.weight", hidden, inter, i, j);
    }
    if (c.n_shared_experts > 0) {
      const int64_t shared = inter * c.n_shared_experts;
      b.Linear(m + "shared_experts.gate_proj.weight", shared, hidden, i);
      b.Linear(m + "shared_experts.up_proj.weight", shared, hidden, i);
      b.Linear(m + "shared_experts.down_proj.weight", hidden, shared, i);
    }
  }

  b.Add("model.norm.weight", {hidden}, false, -1);
  if (!c.tie_word_embeddings) b.Add("lm_head.weight", {c.vocab_size, hidden}, false, -1);
  return out;
}

}  // namespace moeserve::engine
