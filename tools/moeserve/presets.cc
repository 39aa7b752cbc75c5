#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::cli {

using Json = nlohmann::json;

std::vector<std::string> PresetNames() { return {"tiny", "small", "v2-lite", "v3"}; }

absl::StatusOr<Json> PresetConfig(const std::string& preset) {
  Json c = {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"hidden_act", "silu"},
      {"num_nextn_predict_layers", 0},
      {"moe_layer_freq", 1},
  };
  if (preset == "tiny") {
    // The embedded default and test model: the real vocabulary, one dense layer then MoE,
    // 32 experts top-4 in 4 groups, a shared expert, q_lora and YaRN on.
    c.update({{"vocab_size", 129280}, {"hidden_size", 256}, {"intermediate_size", 512},
              {"moe_intermediate_size", 128}, {"num_hidden_layers", 4},
              {"num_attention_heads", 4}, {"num_key_value_heads", 4}, {"q_lora_rank", 128},
              {"kv_lora_rank", 64}, {"qk_nope_head_dim", 32}, {"qk_rope_head_dim", 16},
              {"v_head_dim", 32}, {"n_routed_experts", 32}, {"num_experts_per_tok", 4},
              {"n_shared_experts", 1}, {"n_group", 4}, {"topk_group", 2},
              {"topk_method", "noaux_tc"}, {"scoring_func", "sigmoid"}, {"norm_topk_prob", true},
              {"routed_scaling_factor", 2.5}, {"first_k_dense_replace", 1},
              {"max_position_embeddings", 16384},
              {"rope_scaling",
               {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 4096},
                {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}}});
  } else if (preset == "small") {
    // A CPU benchmark model whose weights (about 2 GB in BF16) exceed every cache.
    c.update({{"vocab_size", 129280}, {"hidden_size", 1024}, {"intermediate_size", 2816},
              {"moe_intermediate_size", 512}, {"num_hidden_layers", 8},
              {"num_attention_heads", 8}, {"num_key_value_heads", 8}, {"q_lora_rank", 384},
              {"kv_lora_rank", 256}, {"qk_nope_head_dim", 64}, {"qk_rope_head_dim", 32},
              {"v_head_dim", 64}, {"n_routed_experts", 64}, {"num_experts_per_tok", 6},
              {"n_shared_experts", 2}, {"n_group", 8}, {"topk_group", 3},
              {"topk_method", "noaux_tc"}, {"scoring_func", "sigmoid"}, {"norm_topk_prob", true},
              {"routed_scaling_factor", 2.5}, {"first_k_dense_replace", 1},
              {"max_position_embeddings", 16384},
              {"rope_scaling",
               {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 4096},
                {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}}});
  } else if (preset == "v2-lite") {
    // DeepSeek-V2-Lite's published shape.
    c.update({{"model_type", "deepseek_v2"}, {"architectures", {"DeepseekV2ForCausalLM"}},
              {"vocab_size", 102400}, {"hidden_size", 2048}, {"intermediate_size", 10944},
              {"moe_intermediate_size", 1408}, {"num_hidden_layers", 27},
              {"num_attention_heads", 16}, {"num_key_value_heads", 16}, {"q_lora_rank", nullptr},
              {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
              {"v_head_dim", 128}, {"n_routed_experts", 64}, {"num_experts_per_tok", 6},
              {"n_shared_experts", 2}, {"n_group", 1}, {"topk_group", 1},
              {"topk_method", "greedy"}, {"scoring_func", "softmax"}, {"norm_topk_prob", false},
              {"routed_scaling_factor", 1.0}, {"first_k_dense_replace", 1},
              {"bos_token_id", 100000}, {"eos_token_id", 100001},
              {"max_position_embeddings", 163840},
              {"rope_scaling",
               {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 0.707},
                {"mscale_all_dim", 0.707}}}});
  } else if (preset == "v3") {
    // DeepSeek-V3's published shape (671B parameters): for memory planning and sharded-loading
    // tests; write it with --no-weights or a reduced --num-layers.
    c.update({{"vocab_size", 129280}, {"hidden_size", 7168}, {"intermediate_size", 18432},
              {"moe_intermediate_size", 2048}, {"num_hidden_layers", 61},
              {"num_attention_heads", 128}, {"num_key_value_heads", 128},
              {"q_lora_rank", 1536}, {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128},
              {"qk_rope_head_dim", 64}, {"v_head_dim", 128}, {"n_routed_experts", 256},
              {"num_experts_per_tok", 8}, {"n_shared_experts", 1}, {"n_group", 8},
              {"topk_group", 4}, {"topk_method", "noaux_tc"}, {"scoring_func", "sigmoid"},
              {"norm_topk_prob", true}, {"routed_scaling_factor", 2.5},
              {"first_k_dense_replace", 3}, {"max_position_embeddings", 163840},
              {"rope_scaling",
               {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}}});
  } else {
    return absl::NotFoundError(absl::StrCat("unknown preset '", preset, "' (have ",
                                            absl::StrJoin(PresetNames(), ", "), ")"));
  }
  return c;
}

}  // namespace moeserve::cli
