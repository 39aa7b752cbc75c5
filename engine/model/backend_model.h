#ifndef MOESERVE_ENGINE_MODEL_BACKEND_MODEL_H_
#define MOESERVE_ENGINE_MODEL_BACKEND_MODEL_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/expert_executor.h"
#include "engine/model.h"
#include "engine/step_runner.h"

namespace moeserve::engine {

struct BackendModelOptions {
  int64_t block_tokens = 16;
  int64_t num_blocks = 64;  // the latent cache in backend memory, KvCache's layout
  // Its elements: kF32, or kBf16 (each latent rounded as the step writes it; attention widens
  // them back, so all arithmetic stays float32).
  DType cache_dtype = DType::kF32;
  // > 0 (vLLM's --gpu-memory-utilization): num_blocks is not used; the cache takes what is left
  // of this fraction of the backend's total memory after this process's weights (the uploaded
  // ones plus other_bytes, e.g. a BackendExpertExecutor's) and a step's scratch (for
  // max_step_tokens tokens and max_logit_rows rows of logits), and no more than what is free
  // after the scratch (CacheBlocksForMemory).
  double memory_fraction = 0;
  int64_t other_bytes = 0;
  int64_t max_step_tokens = 512;
  int64_t max_logit_rows = 128;
  // Decode steps from graphs (Backend::BeginCapture; CUDA graphs on a GPU): a step whose
  // chunks are one token each with its logits, whose MoE layers all run on this backend
  // (ExpertExecutor::RunsOnBackend) and whose batch is at most max_graph_batch runs padded to a
  // bucket of batch (GraphBatch) and block-table width (the next power of two): the first step
  // of a bucket runs op by op and is then captured, later ones replay the capture, one launch
  // instead of a few hundred. Padding tokens attend to the first sequence's first row and
  // write no cache row. Other steps run op by op. A capture that fails turns graphs off, with
  // the reason in graph_status().
  bool graphs = false;
  int64_t max_graph_batch = 256;

  // The cache geometry of an Engine with these options, for a BackendModel that is its runner.
  static BackendModelOptions ForEngine(const ModelConfig& config, const EngineOptions& engine) {
    BackendModelOptions o;
    o.block_tokens = engine.block_tokens;
    o.num_blocks = Engine::PoolBlocks(config, engine);
    o.cache_dtype = engine.kv_cache_dtype;
    o.max_step_tokens = engine.max_step_tokens;
    o.max_logit_rows = engine.max_logit_rows;
    return o;
  }
};

// The DeepSeek model's forward step over any Backend (engine/backend.h): the attention-side
// weights of a loaded Model are uploaded once, the paged latent cache lives in backend memory,
// and every op of the step runs on the backend's stream. The routed experts go through an
// ExpertExecutor (the worker/expert-shard split of DESIGN.md): one whose experts live on this
// backend (BackendExpertExecutor, RunsOnBackend) takes the gate's choice where it lies and the
// step never waits for the host until the logits; any other (the model's local one by default,
// expert shards) gets the rows on the host, one synchronisation per MoE layer. The gate, the
// shared experts and everything else run on the backend. The logits come back through pinned
// memory into the caller's vectors, whose capacity is reused from step to step; a greedy row
// (SequenceChunk::argmax_vocab) comes back as its argmax alone.
//
// With the CPU backend this runs the same operations in the same order as Model::Forward, so
// the two agree bit for bit (tests/unit/engine/backend_model_test.cc): that is how the
// backend-generic step is checked without a GPU; tests/gpu compares the CUDA backend to it.
//
// As an Engine's StepRunner (EngineOptions::runner) the Engine keeps the block accounting and this
// object the blocks' bytes; the Engine's block_tokens must equal this cache's and its pool must
// not hold more blocks, and their element types must agree (FailedPrecondition otherwise).
// Borrows the model and backend, which must outlive it. Not thread-safe (the engine thread).
class BackendModel final : public StepRunner {
 public:
  // Backend memory one step of `tokens` tokens, `logit_rows` of them with logits, may take
  // beyond the weights and the cache: an upper estimate of the step's activations (the MoE
  // layers' routed rows included) with a margin for the backend's own workspaces.
  static int64_t StepScratchBytes(const ModelConfig& config, int64_t tokens, int64_t logit_rows);
  // Cache blocks of `block_bytes` for BackendModelOptions::memory_fraction: the smaller of
  // fraction x total - own_bytes - scratch_bytes and free - scratch_bytes, in whole blocks.
  // ResourceExhausted, saying how the memory is spent, when not one block fits.
  static absl::StatusOr<int64_t> CacheBlocksForMemory(const MemoryInfo& memory, double fraction,
                                                      int64_t own_bytes, int64_t scratch_bytes,
                                                      int64_t block_bytes);

  // ResourceExhausted when the backend cannot hold the weights or the cache; FailedPrecondition
  // for a model without its attention-side weights; InvalidArgument for a bad cache size.
  static absl::StatusOr<std::unique_ptr<BackendModel>> Create(const Model* model, Backend* backend,
                                                              const BackendModelOptions& options);
  ~BackendModel() override;

  // Model::Forward's contract, over this object's cache (block tables index its blocks).
  // `experts` null: the model's local executor. `argmax` set: StepRunner's contract (chunks
  // with argmax_vocab > 0 get their argmax, found on the backend, instead of a row); null: every
  // row comes back, as from Model::Forward.
  absl::Status Forward(absl::Span<const SequenceChunk> chunks, ExpertExecutor* experts,
                       std::vector<std::vector<float>>* logits,
                       std::vector<int32_t>* argmax = nullptr);

  // The rows of one cache block for every layer (layers x block_tokens x latent_dim floats, as
  // KvCache lays a block out), read back to the host and widened to float32 from a BF16 cache.
  absl::StatusOr<std::vector<float>> ReadBlock(int32_t block) const;

  // StepRunner: the Engine's cache supplies the geometry only.
  absl::Status Forward(absl::Span<const SequenceChunk> chunks, KvCache* cache,
                       ExpertExecutor* experts, std::vector<std::vector<float>>* logits,
                       std::vector<int32_t>* argmax) override;
  absl::Status CopyBlock(KvCache* cache, int32_t src, int32_t dst, int64_t tokens) override;
  absl::Status WriteBlock(KvCache* cache, int32_t block, absl::string_view bytes) override;
  absl::StatusOr<std::string> ReadBlock(const KvCache& cache, int32_t block) const override;

  // The batch a graph of a decode step of n tokens runs (n rounded up to 1, 2, 4, 8, then a
  // multiple of 8).
  static int64_t GraphBatch(int64_t n);
  // Turns decode graphs on or off from the next step (BackendModelOptions::graphs); turning
  // them off releases the captured graphs.
  void SetGraphs(bool on);
  // Decode steps replayed from a graph and graphs captured (readable from any thread), and OK
  // or why graphs were turned off (engine thread).
  int64_t graph_replays() const { return graph_replays_.load(std::memory_order_relaxed); }
  int64_t graphs_captured() const { return graphs_captured_.load(std::memory_order_relaxed); }
  const absl::Status& graph_status() const { return graph_status_; }

  int64_t block_tokens() const { return options_.block_tokens; }
  int64_t num_blocks() const { return options_.num_blocks; }
  // Bytes of backend memory held (weights, cache and scratch).
  int64_t backend_bytes() const;
  // Of which the uploaded weights.
  int64_t weight_bytes() const;

 private:
  struct Weights;
  BackendModel(const Model* model, Backend* backend, const BackendModelOptions& options);
  absl::Status Upload();
  absl::Status CheckGeometry(const KvCache& cache) const;
  // The first byte of a cache block, and a block's bytes (every layer's rows).
  char* BlockData(int32_t block) const;
  int64_t BlockBytes() const;
  // A block's bytes as they lie (InvalidArgument for a block outside the cache).
  absl::StatusOr<std::string> BlockBytesOf(int32_t block) const;
  // A scratch buffer of at least `count` elements of T in backend memory, reused across steps.
  template <typename T>
  absl::StatusOr<T*> Scratch(int slot, int64_t count);
  // Whether a step of these chunks may run from a graph (BackendModelOptions::graphs).
  bool GraphStep(absl::Span<const SequenceChunk> chunks, ExpertExecutor* experts) const;
  // The embedding and every layer over n tokens whose ids, positions, attention items, block
  // tables (max_blocks wide) and cache rows are in their scratch slots; the hidden state ends
  // in the kX slot.
  absl::Status Layers(int64_t n, int64_t max_blocks, ExpertExecutor* experts);
  // Final norm and LM head over `rows` rows of hidden state at `in`, into the kLogits slot.
  absl::Status LmHead(const float* in, int64_t rows);
  // Layers and LmHead of a padded decode step from its graph: replayed, or run op by op and
  // then captured for the next step of its shape.
  absl::Status GraphBody(int64_t n, int64_t max_blocks, ExpertExecutor* experts);
  // The logits slot's rows (LogitRows(chunks) order) back: argmaxes of greedy rows, the rest
  // whole.
  absl::Status Outputs(absl::Span<const SequenceChunk> chunks,
                       std::vector<std::vector<float>>* logits, std::vector<int32_t>* argmax);

  const Model* model_;
  Backend* backend_;
  BackendModelOptions options_;
  std::unique_ptr<Weights> w_;
  BufferPtr cache_;
  std::vector<BufferPtr> scratch_;
  // Bumped whenever a scratch slot moves: graphs hold the old addresses.
  int64_t scratch_epoch_ = 0;
  // Captured decode graphs by (padded batch, padded block-table width), and the scratch epoch
  // they were captured in.
  std::map<std::pair<int64_t, int64_t>, GraphPtr> graphs_;
  int64_t graphs_epoch_ = 0;
  std::atomic<int64_t> graph_replays_{0};
  std::atomic<int64_t> graphs_captured_{0};
  absl::Status graph_status_;
  // Pinned host memory the logits come back through (a device copies to it several times
  // faster than to fresh pageable memory, and it is allocated once, not every step).
  BufferPtr logits_host_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_MODEL_BACKEND_MODEL_H_
