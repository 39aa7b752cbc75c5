#ifndef MOESERVE_ENGINE_STEP_RUNNER_H_
#define MOESERVE_ENGINE_STEP_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/expert_executor.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace moeserve::engine {

// Where an Engine's forward steps run and where its cache blocks' bytes live. The Engine keeps
// the block accounting (KvCache's ids, references and free list) either way. Its default runner
// computes on the host with Model::Forward over KvCache's own storage; BackendModel computes on a
// Backend (a GPU) over a cache in backend memory, addressed by the same block ids.
// A block's bytes are layers x block_tokens x latent_dim float32, layer-major (KvCache's layout).
// Not thread-safe: the engine thread calls it.
class StepRunner {
 public:
  virtual ~StepRunner() = default;

  // Model::Forward's contract, except that a chunk with argmax_vocab > 0 puts no row in `logits`
  // but the row's argmax in `argmax` (chunk order; ArgmaxOf's tie rule). `cache` is the Engine's
  // (its geometry, and its storage for the host runner).
  virtual absl::Status Forward(absl::Span<const SequenceChunk> chunks, KvCache* cache,
                               ExpertExecutor* experts, std::vector<std::vector<float>>* logits,
                               std::vector<int32_t>* argmax) = 0;
  // Copies the first `tokens` slots of every layer of block `src` into block `dst`.
  virtual absl::Status CopyBlock(KvCache* cache, int32_t src, int32_t dst, int64_t tokens) = 0;
  // Sets / reads a whole block's bytes (InvalidArgument for a wrong size).
  virtual absl::Status WriteBlock(KvCache* cache, int32_t block, absl::string_view bytes) = 0;
  virtual absl::StatusOr<std::string> ReadBlock(const KvCache& cache, int32_t block) const = 0;
};

// The host runner: Model::Forward over KvCache's storage. Borrows the model.
class HostStepRunner final : public StepRunner {
 public:
  explicit HostStepRunner(const Model* model) : model_(model) {}
  absl::Status Forward(absl::Span<const SequenceChunk> chunks, KvCache* cache,
                       ExpertExecutor* experts, std::vector<std::vector<float>>* logits,
                       std::vector<int32_t>* argmax) override;
  absl::Status CopyBlock(KvCache* cache, int32_t src, int32_t dst, int64_t tokens) override;
  absl::Status WriteBlock(KvCache* cache, int32_t block, absl::string_view bytes) override;
  absl::StatusOr<std::string> ReadBlock(const KvCache& cache, int32_t block) const override;

 private:
  const Model* model_;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_STEP_RUNNER_H_
