#include "engine/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: field '", field, "' ", what));
}

absl::StatusOr<int64_t> GetInt(const Json& j, const char* field, std::optional<int64_t> dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (dflt) return *dflt;
    return FieldError(field, "is missing");
  }
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  return it->get<int64_t>();
}

absl::StatusOr<double> GetDouble(const Json& j, const char* field, std::optional<double> dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (dflt) return *dflt;
    return FieldError(field, "is missing");
  }
  if (!it->is_number()) return FieldError(field, "must be a number");
  return it->get<double>();
}

absl::StatusOr<bool> GetBool(const Json& j, const char* field, bool dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) return FieldError(field, "must be true or false");
  return it->get<bool>();
}

absl::StatusOr<std::string> GetString(const Json& j, const char* field, const char* dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::string(dflt);
  if (!it->is_string()) return FieldError(field, "must be a string");
  return it->get<std::string>();
}

absl::StatusOr<std::optional<int64_t>> GetTokenId(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::optional<int64_t>();
  if (it->is_number_integer()) return std::optional<int64_t>(it->get<int64_t>());
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
    return std::optional<int64_t>((*it)[0].get<int64_t>());
  }
  return FieldError(field, "must be an integer");
}

absl::StatusOr<YarnScaling> ParseRopeScaling(const Json& r) {
  if (!r.is_object()) return FieldError("rope_scaling", "must be an object or null");
  MOESERVE_ASSIGN_OR_RETURN(std::string type, GetString(r, "type", ""));
  if (type.empty()) {
    MOESERVE_ASSIGN_OR_RETURN(type, GetString(r, "rope_type", ""));
  }
  if (type != "yarn") {
    return FieldError("rope_scaling.type", absl::StrCat("'", type, "' is not supported (only yarn)"));
  }
  YarnScaling y;
  MOESERVE_ASSIGN_OR_RETURN(y.factor, GetDouble(r, "factor", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(y.original_max_position_embeddings,
                            GetInt(r, "original_max_position_embeddings", 4096));
  MOESERVE_ASSIGN_OR_RETURN(y.beta_fast, GetDouble(r, "beta_fast", 32.0));
  MOESERVE_ASSIGN_OR_RETURN(y.beta_slow, GetDouble(r, "beta_slow", 1.0));
  MOESERVE_ASSIGN_OR_RETURN(y.mscale, GetDouble(r, "mscale", 1.0));
  MOESERVE_ASSIGN_OR_RETURN(y.mscale_all_dim, GetDouble(r, "mscale_all_dim", 0.0));
  if (!(y.factor > 0)) return FieldError("rope_scaling.factor", "must be positive");
  if (y.original_max_position_embeddings <= 0) {
    return FieldError("rope_scaling.original_max_position_embeddings", "must be positive");
  }
  return y;
}

absl::Status Positive(int64_t v, const char* field) {
  if (v <= 0) return FieldError(field, absl::StrCat("must be positive (got ", v, ")"));
  return absl::OkStatus();
}

}  // namespace

double YarnGetMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

double ModelConfig::SoftmaxScale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(q_head_dim()));
  if (rope_scaling && rope_scaling->mscale_all_dim != 0.0) {
    double m = YarnGetMscale(rope_scaling->factor, rope_scaling->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  ModelConfig c;
  MOESERVE_ASSIGN_OR_RETURN(c.model_type, GetString(j, "model_type", "deepseek_v3"));
  MOESERVE_ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, "vocab_size", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, "hidden_size", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, "intermediate_size", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.num_hidden_layers, GetInt(j, "num_hidden_layers", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.num_attention_heads, GetInt(j, "num_attention_heads", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.num_nextn_predict_layers, GetInt(j, "num_nextn_predict_layers", 0));
  MOESERVE_ASSIGN_OR_RETURN(int64_t q_lora, GetInt(j, "q_lora_rank", 0));
  if (q_lora > 0) c.q_lora_rank = q_lora;
  MOESERVE_ASSIGN_OR_RETURN(c.kv_lora_rank, GetInt(j, "kv_lora_rank", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.qk_nope_head_dim, GetInt(j, "qk_nope_head_dim", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.qk_rope_head_dim, GetInt(j, "qk_rope_head_dim", std::nullopt));
  MOESERVE_ASSIGN_OR_RETURN(c.v_head_dim, GetInt(j, "v_head_dim", std::nullopt));

  MOESERVE_ASSIGN_OR_RETURN(c.n_routed_experts, GetInt(j, "n_routed_experts", 0));
  if (c.n_routed_experts > 0) {
    MOESERVE_ASSIGN_OR_RETURN(c.moe_intermediate_size,
                              GetInt(j, "moe_intermediate_size", std::nullopt));
    MOESERVE_ASSIGN_OR_RETURN(c.num_experts_per_tok, GetInt(j, "num_experts_per_tok", std::nullopt));
  }
  MOESERVE_ASSIGN_OR_RETURN(c.n_shared_experts, GetInt(j, "n_shared_experts", 0));
  MOESERVE_ASSIGN_OR_RETURN(c.n_group, GetInt(j, "n_group", 1));
  MOESERVE_ASSIGN_OR_RETURN(c.topk_group, GetInt(j, "topk_group", 1));
  MOESERVE_ASSIGN_OR_RETURN(c.first_k_dense_replace, GetInt(j, "first_k_dense_replace", 0));
  MOESERVE_ASSIGN_OR_RETURN(c.moe_layer_freq, GetInt(j, "moe_layer_freq", 1));
  MOESERVE_ASSIGN_OR_RETURN(c.norm_topk_prob, GetBool(j, "norm_topk_prob", false));
  MOESERVE_ASSIGN_OR_RETURN(c.routed_scaling_factor, GetDouble(j, "routed_scaling_factor", 1.0));
  MOESERVE_ASSIGN_OR_RETURN(std::string scoring, GetString(j, "scoring_func", "softmax"));
  if (scoring == "softmax") {
    c.scoring_func = ScoringFunc::kSoftmax;
  } else if (scoring == "sigmoid") {
    c.scoring_func = ScoringFunc::kSigmoid;
  } else {
    return FieldError("scoring_func", absl::StrCat("'", scoring, "' is not softmax or sigmoid"));
  }
  MOESERVE_ASSIGN_OR_RETURN(std::string topk, GetString(j, "topk_method", "greedy"));
  if (topk == "greedy") {
    c.topk_method = TopkMethod::kGreedy;
  } else if (topk == "group_limited_greedy") {
    c.topk_method = TopkMethod::kGroupLimitedGreedy;
  } else if (topk == "noaux_tc") {
    c.topk_method = TopkMethod::kNoauxTc;
  } else {
    return FieldError("topk_method",
                      absl::StrCat("'", topk, "' is not greedy, group_limited_greedy or noaux_tc"));
  }

  MOESERVE_ASSIGN_OR_RETURN(c.rms_norm_eps, GetDouble(j, "rms_norm_eps", 1e-6));
  MOESERVE_ASSIGN_OR_RETURN(c.rope_theta, GetDouble(j, "rope_theta", 10000.0));
  MOESERVE_ASSIGN_OR_RETURN(c.max_position_embeddings, GetInt(j, "max_position_embeddings", 4096));
  auto rs = j.find("rope_scaling");
  if (rs != j.end() && !rs->is_null()) {
    MOESERVE_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(*rs));
  }
  MOESERVE_ASSIGN_OR_RETURN(c.tie_word_embeddings, GetBool(j, "tie_word_embeddings", false));
  MOESERVE_ASSIGN_OR_RETURN(c.bos_token_id, GetTokenId(j, "bos_token_id"));
  MOESERVE_ASSIGN_OR_RETURN(c.eos_token_id, GetTokenId(j, "eos_token_id"));

  // Consistency.
  MOESERVE_RETURN_IF_ERROR(Positive(c.vocab_size, "vocab_size"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.hidden_size, "hidden_size"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.num_hidden_layers, "num_hidden_layers"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.num_attention_heads, "num_attention_heads"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.kv_lora_rank, "kv_lora_rank"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.qk_nope_head_dim, "qk_nope_head_dim"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.qk_rope_head_dim, "qk_rope_head_dim"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.v_head_dim, "v_head_dim"));
  MOESERVE_RETURN_IF_ERROR(Positive(c.max_position_embeddings, "max_position_embeddings"));
  if (c.qk_rope_head_dim % 2 != 0) return FieldError("qk_rope_head_dim", "must be even");
  if (c.moe_layer_freq <= 0) return FieldError("moe_layer_freq", "must be positive");
  if (c.first_k_dense_replace < 0) return FieldError("first_k_dense_replace", "must be >= 0");
  if (c.num_nextn_predict_layers < 0) return FieldError("num_nextn_predict_layers", "must be >= 0");
  if (!(c.rms_norm_eps > 0)) return FieldError("rms_norm_eps", "must be positive");
  bool any_dense = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) any_dense |= !c.IsMoeLayer(l);
  if (any_dense) MOESERVE_RETURN_IF_ERROR(Positive(c.intermediate_size, "intermediate_size"));
  if (c.n_routed_experts < 0) return FieldError("n_routed_experts", "must be >= 0");
  if (c.n_routed_experts > 0) {
    MOESERVE_RETURN_IF_ERROR(Positive(c.moe_intermediate_size, "moe_intermediate_size"));
    MOESERVE_RETURN_IF_ERROR(Positive(c.num_experts_per_tok, "num_experts_per_tok"));
    MOESERVE_RETURN_IF_ERROR(Positive(c.n_group, "n_group"));
    MOESERVE_RETURN_IF_ERROR(Positive(c.topk_group, "topk_group"));
    if (c.num_experts_per_tok > c.n_routed_experts) {
      return FieldError("num_experts_per_tok", "exceeds n_routed_experts");
    }
    if (c.topk_method != TopkMethod::kGreedy) {
      if (c.n_routed_experts % c.n_group != 0) {
        return FieldError("n_group", "must divide n_routed_experts");
      }
      if (c.topk_group > c.n_group) return FieldError("topk_group", "exceeds n_group");
      int64_t per_group = c.n_routed_experts / c.n_group;
      if (c.topk_group * per_group < c.num_experts_per_tok) {
        return FieldError("topk_group", "selects fewer experts than num_experts_per_tok");
      }
      if (c.topk_method == TopkMethod::kNoauxTc && per_group < 2) {
        return FieldError("n_group", "noaux_tc needs at least 2 experts per group");
      }
    }
    if (c.n_shared_experts < 0) return FieldError("n_shared_experts", "must be >= 0");
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<ModelConfig> c = ParseModelConfig(ss.str());
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  }
  return c;
}

}  // namespace moeserve::engine
