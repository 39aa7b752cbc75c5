#ifndef MOESERVE_ENGINE_MODEL_H_
#define MOESERVE_ENGINE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/thread_pool.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/expert_executor.h"
#include "engine/kv_cache.h"
#include "engine/weights.h"

namespace moeserve::engine {

struct ModelOptions {
  ComputeDType compute = ComputeDType::kBf16;
  int threads = 0;  // 0: one per core
  // Which tensors to load. A worker that sends routed experts to shards loads none of them.
  TensorFilter filter;
};

// One chunk of one sequence in a forward step: `tokens` at positions [start_pos,
// start_pos + tokens.size()). The cache already holds positions [0, start_pos) in the blocks of
// `block_table`, which must also have room for the new tokens (the caller allocates).
struct SequenceChunk {
  absl::Span<const int32_t> tokens;
  int64_t start_pos = 0;
  absl::Span<const int32_t> block_table;
  // Logits of the chunk's last `logits_tokens` tokens (0: none; 1: the next-token logits).
  int64_t logits_tokens = 0;
  // > 0 (with logits_tokens == 1): only the argmax of the row's first `argmax_vocab` logits is
  // wanted (greedy decoding). Model::Forward still returns the row; a StepRunner returns the id
  // instead (BackendModel finds it on the device and copies back 4 bytes, not a vocab of floats).
  int64_t argmax_vocab = 0;
};

// Weights of one transformer layer in compute form.
struct LayerWeights {
  bool moe = false;
  std::vector<float> input_norm, post_norm, q_a_norm, kv_a_norm;
  Matrix q_a, q_b, q;           // q_a/q_b with q_lora_rank, else q
  Matrix kv_a, kv_b, o;         // kv_a_proj_with_mqa, kv_b_proj, o_proj
  std::vector<Matrix> uk_t;     // per head: kv_b's key rows transposed, [kv_lora_rank, nope]
  std::vector<Matrix> uv;       // per head: kv_b's value rows, [v_head_dim, kv_lora_rank]
  Matrix gate, up, down;        // dense MLP, or the shared experts of an MoE layer
  bool has_shared = false;
  Matrix router;                // mlp.gate.weight [n_routed, hidden]
  std::vector<float> router_bias;  // e_score_correction_bias (noaux_tc)
};

struct ExpertWeights {
  bool loaded = false;
  Matrix gate, up, down;
};

// The DeepSeek-V2/V3 model on the CPU: loads a checkpoint and runs batched forward steps over a
// paged latent KV cache. Immutable after Load; Forward must be called from one thread at a time
// (the engine thread) because it uses the model's thread pool and scratch space.
class Model {
 public:
  // Opens, validates and loads DIR. Errors name the file and tensor (see checkpoint.h).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir,
                                                     const ModelOptions& options);
  ~Model();

  const ModelConfig& config() const { return config_; }
  ComputeDType compute() const { return options_.compute; }
  ThreadPool* pool() const { return pool_.get(); }
  // Bytes of weights held in compute form (mapped or owned).
  int64_t weight_bytes() const { return weight_bytes_; }

  // The in-process executor over this model's routed experts (FailedPrecondition for experts the
  // filter left out).
  ExpertExecutor* local_experts() const { return local_experts_.get(); }
  const ExpertWeights& expert(int64_t layer, int64_t e) const {
    return experts_[layer][e];
  }
  // The compute-form weights, for code that runs the model elsewhere (BackendModel uploads them).
  const LayerWeights& layer(int64_t l) const { return layers_[l]; }
  const Matrix& embed() const { return embed_; }
  const Matrix& lm_head() const { return lm_head_; }
  const std::vector<float>& final_norm() const { return final_norm_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  double rope_mscale() const { return rope_mscale_; }
  const ModelOptions& options() const { return options_; }

  // Runs one step over the chunks: writes every new token's latent into `cache`, and fills
  // `logits` (one vector of vocab_size per row that chunks ask for, in chunk order and, within
  // a chunk, in position order).
  // `experts` null: the local executor. InvalidArgument for token ids out of the vocabulary or
  // positions beyond max_position_embeddings.
  absl::Status Forward(absl::Span<const SequenceChunk> chunks, KvCache* cache,
                       ExpertExecutor* experts, std::vector<std::vector<float>>* logits) const;

 private:
  Model() = default;
  absl::Status LoadWeights();

  ModelConfig config_;
  ModelOptions options_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<ThreadPool> pool_;
  Matrix embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<std::vector<ExpertWeights>> experts_;  // [layer][expert]
  std::vector<float> inv_freq_;                      // rope inverse frequencies (YaRN-adjusted)
  double rope_mscale_ = 1.0;
  int64_t weight_bytes_ = 0;
  std::unique_ptr<ExpertExecutor> local_experts_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_MODEL_H_
