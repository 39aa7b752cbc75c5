#ifndef MOESERVE_ENGINE_MODEL_BACKEND_EXPERTS_H_
#define MOESERVE_ENGINE_MODEL_BACKEND_EXPERTS_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/expert_executor.h"
#include "engine/model.h"

namespace moeserve::engine {

// The routed experts on a Backend: the experts `model` loaded are uploaded once; Run groups the
// rows by expert on the host (GroupSlotsByExpert), runs the backend's GroupedExperts over them and
// combines each token's outputs in its top-k order on the host (CombineSlots): the operations of
// LocalExpertExecutor, so over the CPU backend the two agree bit for bit. Each Run copies the
// gathered rows to the backend and the outputs back (one synchronisation).
// Borrows the model and backend. Not thread-safe. Errors: FailedPrecondition for an expert not
// loaded; InvalidArgument for ids out of range; the backend's errors.
class BackendExpertExecutor final : public ExpertExecutor {
 public:
  static absl::StatusOr<std::unique_ptr<BackendExpertExecutor>> Create(const Model* model,
                                                                       Backend* backend);
  ~BackendExpertExecutor() override;

  absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                   const float* weights, float* out) override;

  // Whether RunOnBackend serves `layer` of a model on `backend`: the same backend, every routed
  // expert of the layer loaded here, and a backend that runs RoutedExperts for their dtype.
  bool RunsOnBackend(const Backend* backend, int64_t layer) const override;
  // Run with x, ids, weights and out in the backend's memory: RoutedExperts, the routing on the
  // backend and no host round trip. Over the CPU backend, equal to Run bit for bit.
  absl::Status RunOnBackend(int64_t layer, const float* x, int64_t n, int64_t k,
                            const int32_t* ids, const float* weights, float* out) override;

  // An expert shard's form: the rows come grouped by expert (experts ascending, expert
  // experts[i] takes counts[i] consecutive rows of x), and each row's SwiGLU output goes to the
  // same row of out, uncombined. x and out are host memory (rows x hidden floats); one copy in,
  // GroupedExperts, one copy out. Over the CPU backend, bit for bit the host's grouped products.
  // FailedPrecondition for a layer that is not MoE or an expert not loaded; InvalidArgument for
  // mismatched spans or negative counts.
  absl::Status RunGroups(int64_t layer, absl::Span<const int32_t> experts,
                         absl::Span<const int64_t> counts, const float* x, float* out);

  int64_t backend_bytes() const { return bytes_; }

 private:
  struct Uploaded {
    BufferPtr gate, up, down;
    ExpertGroup group;  // weight views; offset/count filled per Run
  };
  BackendExpertExecutor(const Model* model, Backend* backend) : model_(model), backend_(backend) {}
  absl::StatusOr<float*> Scratch(int slot, int64_t floats);

  const Model* model_;
  Backend* backend_;
  std::vector<std::vector<std::unique_ptr<Uploaded>>> experts_;  // [layer][expert], null if absent
  // [layer]: RoutedExperts' table of the layer's experts in backend memory; null unless the
  // layer's experts are all here, of one dtype, and the backend runs RoutedExperts for it.
  std::vector<BufferPtr> tables_;
  BufferPtr scratch_[2];
  int64_t bytes_ = 0;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_MODEL_BACKEND_EXPERTS_H_
