#ifndef MOESERVE_ENGINE_ENGINE_H_
#define MOESERVE_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/step_runner.h"

namespace moeserve::engine {

struct EngineOptions {
  int64_t block_tokens = 64;
  // KV pool size: kv_cache_tokens when > 0, else kv_cache_bytes.
  int64_t kv_cache_tokens = 0;
  int64_t kv_cache_bytes = int64_t{256} << 20;
  // The cache's element type: kF32, or kBf16 (half the bytes a token, so twice the tokens in
  // kv_cache_bytes), which needs a backend runner (the host runner computes over float32 rows).
  DType kv_cache_dtype = DType::kF32;
  // Chunked prefill: at most this many tokens go through one forward step.
  int64_t max_step_tokens = 512;
  // A sequence that wants every position's logits (Add's PositionLogitsFn) runs at most this
  // many of its tokens a step: each is a row of vocab_size floats (66 MB for 128 rows of
  // DeepSeek-V3's 129 280).
  int64_t max_logit_rows = 128;
  // Where steps run (borrowed; must outlive the Engine and match its block geometry); null: on
  // the host (HostStepRunner).
  StepRunner* runner = nullptr;
};

using SeqId = int64_t;

struct StepOutput {
  SeqId seq;
  std::vector<float> logits;  // next-token logits after the sequence's last token
  // For a sequence under SetArgmax: the argmax of those logits' first argmax_vocab entries
  // (lowest id on ties), and `logits` is empty. -1 otherwise.
  int32_t argmax = -1;
};

// Receives the logits at position p of a sequence (those that score token p + 1), for every p
// in [0, length - 1) of the tokens it was added with (prompt scoring: OpenAI's echo with
// logprobs, vLLM's prompt_logprobs). Called on the engine thread during Step, in position
// order, once per computation of the position: again if the sequence is freed and added anew.
// The span is valid for the call only.
using PositionLogitsFn = std::function<void(int64_t position, absl::Span<const float> logits)>;

// The continuous-batching building block over one Model: sequences are added with their prompt,
// stepped together (every step runs the pending tokens of as many sequences as the token budget
// and the KV pool allow, splitting long prompts into chunks), extended one token at a time,
// forked at a prefix (sharing its cache blocks) and freed.
//
// Not thread-safe: one thread (the engine thread) owns an Engine and its cache.
// Errors: InvalidArgument for bad token ids, empty prompts, lengths beyond the model's context,
// unknown sequence ids; ResourceExhausted when the KV pool cannot hold a sequence even alone, or
// when no pending sequence can get blocks this step (they wait while others hold the pool).
class Engine {
 public:
  Engine(const Model* model, const EngineOptions& options);
  ~Engine();

  // Blocks in the KV pool an Engine with these options has (what a StepRunner must hold).
  static int64_t PoolBlocks(const ModelConfig& config, const EngineOptions& options);

  // `position_logits` set: every position of the prompt runs (ImportPrefix takes nothing) and
  // its logits go to the function, at most options.max_logit_rows tokens a step.
  absl::StatusOr<SeqId> Add(const std::vector<int32_t>& prompt,
                            PositionLogitsFn position_logits = nullptr);
  // A new sequence holding the first `prefix_len` tokens of `seq`, which must already be in the
  // cache; full blocks are shared, the partial last one is copied.
  absl::StatusOr<SeqId> Fork(SeqId seq, int64_t prefix_len);
  absl::Status Append(SeqId seq, int32_t token);
  absl::Status Free(SeqId seq);
  // Greedy decoding: `vocab` > 0 makes the sequence's outputs carry only the argmax of the first
  // `vocab` logits (StepOutput::argmax), which a backend runner finds on its device, so the
  // step copies back 4 bytes instead of the row; 0 brings the logits back. InvalidArgument for
  // an unknown sequence or a vocab outside [0, vocab_size].
  absl::Status SetArgmax(SeqId seq, int64_t vocab);

  // One forward step. Returns the logits of every sequence whose pending tokens were all
  // consumed by this step. `experts` null: the model's local experts.
  absl::StatusOr<std::vector<StepOutput>> Step(ExpertExecutor* experts = nullptr);

  // Prefix caching across processes. A block's bytes are its latent rows for every layer
  // (layers x block_tokens x latent_dim elements of the cache's dtype, as KvCache lays them
  // out), so only engines with the same kv_cache_dtype can share blocks.
  int64_t BlockBytes() const;
  // Fills the first blocks of a just-added sequence (nothing computed yet) from `blocks`, so only
  // the rest of its tokens is computed. At most (length - 1) / block_tokens blocks are taken (the
  // last token always runs, to produce logits); returns how many tokens were imported.
  // InvalidArgument for a wrong byte size, a sequence that already ran or one added with
  // position logits; ResourceExhausted when the pool has no room.
  absl::StatusOr<int64_t> ImportPrefix(SeqId seq, absl::Span<const std::string> blocks);
  // The bytes of full block `index` of `seq` (its tokens must be computed).
  absl::StatusOr<std::string> ExportBlock(SeqId seq, int64_t index) const;
  // Tokens of `seq` whose latents are in the cache.
  absl::StatusOr<int64_t> CachedTokens(SeqId seq) const;
  // Sequences held, and blocks free, for load reports.
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }

  bool HasPending() const;
  absl::StatusOr<int64_t> Length(SeqId seq) const;  // tokens in the sequence
  const KvCache& cache() const { return cache_; }
  const Model& model() const { return *model_; }

 private:
  struct Sequence {
    std::vector<int32_t> tokens;
    int64_t cached = 0;  // tokens whose latents are in the cache
    std::vector<int32_t> blocks;
    PositionLogitsFn position_logits;  // set: logits for positions [0, prompt_len - 1)
    int64_t prompt_len = 0;
    int64_t argmax_vocab = 0;  // SetArgmax
  };
  absl::Status CheckTokens(const std::vector<int32_t>& tokens) const;
  absl::StatusOr<Sequence*> Find(SeqId seq);
  // Makes sure `s` has blocks for `tokens` positions; false when the pool ran out (the blocks
  // taken so far stay with the sequence).
  bool Reserve(Sequence* s, int64_t tokens);

  const Model* model_;
  EngineOptions options_;
  KvCache cache_;
  HostStepRunner host_runner_;
  StepRunner* runner_;  // options_.runner, or host_runner_
  std::map<SeqId, Sequence> seqs_;
  SeqId next_id_ = 1;
  // A step's logits rows, and rows kept for later steps: a scored prompt's rows (up to
  // max_logit_rows of vocab_size floats) are reused step after step rather than allocated and
  // page-faulted anew (that was most of a scored prefill's time on the `tiny` preset).
  std::vector<std::vector<float>> step_logits_, spare_logits_;
  std::vector<int32_t> step_argmax_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_ENGINE_H_
