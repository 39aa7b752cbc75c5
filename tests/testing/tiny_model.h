#ifndef MOESERVE_TESTS_TESTING_TINY_MODEL_H_
#define MOESERVE_TESTS_TESTING_TINY_MODEL_H_

#include <filesystem>
#include <unistd.h>

#include <string>

#include "nlohmann/json.hpp"

namespace moeserve::testing {

// A small DeepSeek-V3-shaped config (small vocabulary, every feature on) for fast unit tests.
// Fields can be overridden with `patch` (merged over the defaults).
inline nlohmann::json SmallConfig(const nlohmann::json& patch = nlohmann::json::object()) {
  nlohmann::json c = {
      {"model_type", "deepseek_v3"}, {"vocab_size", 384}, {"hidden_size", 64},
      {"intermediate_size", 96}, {"moe_intermediate_size", 32}, {"num_hidden_layers", 3},
      {"num_attention_heads", 4}, {"q_lora_rank", 48}, {"kv_lora_rank", 32},
      {"qk_nope_head_dim", 16}, {"qk_rope_head_dim", 8}, {"v_head_dim", 16},
      {"n_routed_experts", 16}, {"num_experts_per_tok", 4}, {"n_shared_experts", 1},
      {"n_group", 4}, {"topk_group", 2}, {"topk_method", "noaux_tc"},
      {"scoring_func", "sigmoid"}, {"norm_topk_prob", true}, {"routed_scaling_factor", 2.5},
      {"first_k_dense_replace", 1}, {"moe_layer_freq", 1}, {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000}, {"max_position_embeddings", 512}, {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"rope_scaling",
       {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 128},
        {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}}};
  c.merge_patch(patch);
  return c;
}

// A fresh temporary directory for one test.
inline std::string TempDir(const std::string& name) {
  std::filesystem::path p = std::filesystem::temp_directory_path() /
                            ("moeserve_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_TESTING_TINY_MODEL_H_
