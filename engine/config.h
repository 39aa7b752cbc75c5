#ifndef MOESERVE_ENGINE_CONFIG_H_
#define MOESERVE_ENGINE_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace moeserve::engine {

// YaRN rope scaling as DeepSeek-V2/V3 configs write it ("rope_scaling": {"type": "yarn", ...}).
struct YarnScaling {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

enum class ScoringFunc { kSoftmax, kSigmoid };
enum class TopkMethod { kGreedy, kGroupLimitedGreedy, kNoauxTc };

// The subset of a Hugging Face DeepSeek-V2/V3 config.json that defines the computation.
struct ModelConfig {
  std::string model_type = "deepseek_v3";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense MLP
  int64_t moe_intermediate_size = 0;  // one routed or shared expert
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_nextn_predict_layers = 0;  // MTP layers in the file; never run, skipped on load

  std::optional<int64_t> q_lora_rank;  // nullopt (null or 0): plain q_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;

  int64_t n_routed_experts = 0;  // 0: no MoE layers at all
  int64_t num_experts_per_tok = 0;
  int64_t n_shared_experts = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;

  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 4096;
  std::optional<YarnScaling> rope_scaling;
  bool tie_word_embeddings = false;

  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;

  int64_t q_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Values cached per token per layer: the normalised latent plus the rotated rope key.
  int64_t latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }
  bool IsMoeLayer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // The attention softmax scale, including YaRN's mscale_all_dim correction.
  double SoftmaxScale() const;
};

// Parses config.json text. InvalidArgument (naming the field) when a field is missing, of the
// wrong type, or inconsistent (e.g. n_routed_experts not divisible by n_group).
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);
// Reads and parses DIR/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

// YaRN's attention-magnitude helper: 0.1 * m * ln(scale) + 1, or 1 when scale <= 1.
double YarnGetMscale(double scale, double mscale);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_CONFIG_H_
