#include "bench/model_costs.h"

namespace moeserve::bench {

double LinearMacsPerToken(const engine::ModelConfig& c) {
  const double h = c.hidden_size, heads = c.num_attention_heads;
  double per_layer = 0;
  if (c.q_lora_rank) {
    per_layer += h * *c.q_lora_rank + *c.q_lora_rank * heads * c.q_head_dim();
  } else {
    per_layer += h * heads * c.q_head_dim();
  }
  per_layer += h * c.latent_dim();
  per_layer += heads * c.qk_nope_head_dim * c.kv_lora_rank;  // absorb keys
  per_layer += heads * c.v_head_dim * c.kv_lora_rank;        // values out of the latent
  per_layer += heads * c.v_head_dim * h;                     // o_proj
  double total = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    total += per_layer;
    if (!c.IsMoeLayer(l)) {
      total += 3 * h * c.intermediate_size;
    } else {
      total += h * c.n_routed_experts;
      total += 3 * h * c.moe_intermediate_size * (c.num_experts_per_tok + c.n_shared_experts);
    }
  }
  return total;
}

double PrefillAttentionMacs(const engine::ModelConfig& c, int64_t n) {
  double macs = 0;
  for (int64_t pos = 0; pos < n; ++pos) {
    macs += static_cast<double>(c.num_attention_heads) * (pos + 1) *
            (c.latent_dim() + c.kv_lora_rank);
  }
  return macs * c.num_hidden_layers;
}

int64_t ExpertBytes(const engine::Model& m) {
  for (int64_t l = 0; l < m.config().num_hidden_layers; ++l) {
    if (m.config().IsMoeLayer(l)) {
      const engine::ExpertWeights& e = m.expert(l, 0);
      return e.gate.bytes() + e.up.bytes() + e.down.bytes();
    }
  }
  return 0;
}

}  // namespace moeserve::bench
