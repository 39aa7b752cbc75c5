// Model::Load: opens and validates the checkpoint, then turns tensors into compute form.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model.h"
#include "engine/model/local_experts.h"
#include "engine/model/ops.h"

namespace moeserve::engine {
namespace {

class TensorLoader {
 public:
  TensorLoader(const Checkpoint& checkpoint, ComputeDType compute, int64_t* bytes)
      : checkpoint_(checkpoint), compute_(compute), bytes_(bytes) {}

  absl::StatusOr<const TensorInfo*> Find(const std::string& name) const {
    const TensorInfo* t = checkpoint_.Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' is missing (checkpoint ", checkpoint_.dir(), ")"));
    }
    return t;
  }

  // `f32` forces float32 whatever the compute dtype (the router gate, as Hugging Face computes
  // it, so expert choice does not depend on the compute precision for F32 checkpoints).
  absl::StatusOr<Matrix> Mat(const std::string& name, bool f32 = false) {
    MOESERVE_ASSIGN_OR_RETURN(const TensorInfo* t, Find(name));
    const TensorInfo* scale = checkpoint_.Find(name + "_scale_inv");
    MOESERVE_ASSIGN_OR_RETURN(Matrix m,
                              LoadMatrix(*t, scale, f32 ? ComputeDType::kF32 : compute_));
    *bytes_ += m.bytes();
    return m;
  }

  absl::StatusOr<std::vector<float>> Vec(const std::string& name) {
    MOESERVE_ASSIGN_OR_RETURN(const TensorInfo* t, Find(name));
    MOESERVE_ASSIGN_OR_RETURN(std::vector<float> v, LoadVectorF32(*t));
    *bytes_ += static_cast<int64_t>(v.size() * sizeof(float));
    return v;
  }

 private:
  const Checkpoint& checkpoint_;
  ComputeDType compute_;
  int64_t* bytes_;
};

// A Matrix of `rows` consecutive rows of `m` starting at `first_row`, sharing its storage.
Matrix RowSlice(const Matrix& m, int64_t first_row, int64_t rows) {
  Matrix s = m;
  s.rows = rows;
  int64_t elem = m.dtype == DType::kF32 ? 4 : 2;
  s.data = static_cast<const uint8_t*>(m.data) + first_row * m.cols * elem;
  return s;
}

// The transpose of rows [first_row, first_row + rows) of m, as an owned matrix of m's dtype.
Matrix TransposedRows(const Matrix& m, int64_t first_row, int64_t rows) {
  Matrix t;
  t.dtype = m.dtype;
  t.rows = m.cols;
  t.cols = rows;
  int64_t elem = m.dtype == DType::kF32 ? 4 : 2;
  t.owned = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(t.rows * t.cols * elem));
  const uint8_t* src = static_cast<const uint8_t*>(m.data);
  uint8_t* dst = t.owned->data();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < m.cols; ++c) {
      std::memcpy(dst + (c * rows + r) * elem, src + ((first_row + r) * m.cols + c) * elem, elem);
    }
  }
  t.data = t.owned->data();
  return t;
}

}  // namespace

Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir,
                                                   const ModelOptions& options) {
  std::unique_ptr<Model> model(new Model());
  model->options_ = options;
  MOESERVE_ASSIGN_OR_RETURN(model->config_, LoadModelConfig(dir));
  MOESERVE_ASSIGN_OR_RETURN(model->checkpoint_,
                            Checkpoint::Open(dir, &model->config_, &options.filter));
  MOESERVE_RETURN_IF_ERROR(ValidateCheckpoint(*model->checkpoint_, model->config_, options.filter));
  model->pool_ = std::make_unique<ThreadPool>(options.threads > 0 ? options.threads
                                                                  : DefaultThreadCount());
  MOESERVE_RETURN_IF_ERROR(model->LoadWeights());
  ops::RopeFrequencies(model->config_, &model->inv_freq_, &model->rope_mscale_);
  model->local_experts_ = std::make_unique<LocalExpertExecutor>(model.get());
  return model;
}

absl::Status Model::LoadWeights() {
  const ModelConfig& c = config_;
  TensorLoader load(*checkpoint_, options_.compute, &weight_bytes_);
  const TensorFilter& filter = options_.filter;
  if (filter.attention_side) {
    MOESERVE_ASSIGN_OR_RETURN(embed_, load.Mat("model.embed_tokens.weight"));
    MOESERVE_ASSIGN_OR_RETURN(final_norm_, load.Vec("model.norm.weight"));
    if (c.tie_word_embeddings) {
      lm_head_ = embed_;
    } else {
      MOESERVE_ASSIGN_OR_RETURN(lm_head_, load.Mat("lm_head.weight"));
    }
  }
  layers_.resize(c.num_hidden_layers);
  experts_.resize(c.num_hidden_layers);
  const int64_t heads = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, vdim = c.v_head_dim;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& w = layers_[l];
    w.moe = c.IsMoeLayer(l);
    const std::string p = absl::StrCat("model.layers.", l, ".");
    if (w.moe) {
      experts_[l].resize(c.n_routed_experts);
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        if (!filter.Wants(l, e)) continue;
        ExpertWeights& x = experts_[l][e];
        const std::string ep = absl::StrCat(p, "mlp.experts.", e, ".");
        MOESERVE_ASSIGN_OR_RETURN(x.gate, load.Mat(ep + "gate_proj.weight"));
        MOESERVE_ASSIGN_OR_RETURN(x.up, load.Mat(ep + "up_proj.weight"));
        MOESERVE_ASSIGN_OR_RETURN(x.down, load.Mat(ep + "down_proj.weight"));
        x.loaded = true;
      }
    }
    if (!filter.attention_side) continue;
    MOESERVE_ASSIGN_OR_RETURN(w.input_norm, load.Vec(p + "input_layernorm.weight"));
    MOESERVE_ASSIGN_OR_RETURN(w.post_norm, load.Vec(p + "post_attention_layernorm.weight"));
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank) {
      MOESERVE_ASSIGN_OR_RETURN(w.q_a, load.Mat(a + "q_a_proj.weight"));
      MOESERVE_ASSIGN_OR_RETURN(w.q_a_norm, load.Vec(a + "q_a_layernorm.weight"));
      MOESERVE_ASSIGN_OR_RETURN(w.q_b, load.Mat(a + "q_b_proj.weight"));
    } else {
      MOESERVE_ASSIGN_OR_RETURN(w.q, load.Mat(a + "q_proj.weight"));
    }
    MOESERVE_ASSIGN_OR_RETURN(w.kv_a, load.Mat(a + "kv_a_proj_with_mqa.weight"));
    MOESERVE_ASSIGN_OR_RETURN(w.kv_a_norm, load.Vec(a + "kv_a_layernorm.weight"));
    MOESERVE_ASSIGN_OR_RETURN(w.kv_b, load.Mat(a + "kv_b_proj.weight"));
    MOESERVE_ASSIGN_OR_RETURN(w.o, load.Mat(a + "o_proj.weight"));
    // Absorbed MLA: per head, the key rows of kv_b transposed (queries map into the latent
    // space) and the value rows as they are (the latent output maps back to v_head_dim).
    for (int64_t h = 0; h < heads; ++h) {
      int64_t base = h * (nope + vdim);
      w.uk_t.push_back(TransposedRows(w.kv_b, base, nope));
      weight_bytes_ += w.uk_t.back().bytes();
      w.uv.push_back(RowSlice(w.kv_b, base + nope, vdim));
    }
    const std::string m = p + "mlp.";
    if (!w.moe) {
      MOESERVE_ASSIGN_OR_RETURN(w.gate, load.Mat(m + "gate_proj.weight"));
      MOESERVE_ASSIGN_OR_RETURN(w.up, load.Mat(m + "up_proj.weight"));
      MOESERVE_ASSIGN_OR_RETURN(w.down, load.Mat(m + "down_proj.weight"));
      continue;
    }
    MOESERVE_ASSIGN_OR_RETURN(w.router, load.Mat(m + "gate.weight", /*f32=*/true));
    if (c.topk_method == TopkMethod::kNoauxTc) {
      MOESERVE_ASSIGN_OR_RETURN(w.router_bias, load.Vec(m + "gate.e_score_correction_bias"));
    }
    if (c.n_shared_experts > 0) {
      w.has_shared = true;
      MOESERVE_ASSIGN_OR_RETURN(w.gate, load.Mat(m + "shared_experts.gate_proj.weight"));
      MOESERVE_ASSIGN_OR_RETURN(w.up, load.Mat(m + "shared_experts.up_proj.weight"));
      MOESERVE_ASSIGN_OR_RETURN(w.down, load.Mat(m + "shared_experts.down_proj.weight"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
