#include "engine/model/backend_experts.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/local_experts.h"

namespace moeserve::engine {
namespace {

absl::StatusOr<BufferPtr> Upload(Backend* b, const Matrix& m, WeightView* view, int64_t* bytes) {
  MOESERVE_ASSIGN_OR_RETURN(BufferPtr buf, b->Allocate(m.bytes(), MemoryType::kDevice));
  MOESERVE_RETURN_IF_ERROR(b->CopyToBackend(buf->data(), m.data, m.bytes()));
  view->dtype = m.dtype;
  view->rows = m.rows;
  view->cols = m.cols;
  view->data = buf->data();
  *bytes += m.bytes();
  return buf;
}

}  // namespace

BackendExpertExecutor::~BackendExpertExecutor() = default;

absl::StatusOr<std::unique_ptr<BackendExpertExecutor>> BackendExpertExecutor::Create(
    const Model* model, Backend* backend) {
  std::unique_ptr<BackendExpertExecutor> x(new BackendExpertExecutor(model, backend));
  const ModelConfig& c = model->config();
  x->experts_.resize(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    x->experts_[l].resize(c.n_routed_experts);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const ExpertWeights& w = model->expert(l, e);
      if (!w.loaded) continue;
      auto u = std::make_unique<Uploaded>();
      MOESERVE_ASSIGN_OR_RETURN(u->gate, Upload(backend, w.gate, &u->group.gate, &x->bytes_));
      MOESERVE_ASSIGN_OR_RETURN(u->up, Upload(backend, w.up, &u->group.up, &x->bytes_));
      MOESERVE_ASSIGN_OR_RETURN(u->down, Upload(backend, w.down, &u->group.down, &x->bytes_));
      x->experts_[l][e] = std::move(u);
    }
  }
  MOESERVE_RETURN_IF_ERROR(backend->Synchronize());
  return x;
}

absl::StatusOr<float*> BackendExpertExecutor::Scratch(int slot, int64_t floats) {
  const int64_t bytes = std::max<int64_t>(floats, 1) * 4;
  if (scratch_[slot] == nullptr || scratch_[slot]->bytes() < bytes) {
    scratch_[slot].reset();
    MOESERVE_ASSIGN_OR_RETURN(scratch_[slot], backend_->Allocate(bytes, MemoryType::kDevice));
  }
  return static_cast<float*>(scratch_[slot]->data());
}

absl::Status BackendExpertExecutor::Run(int64_t layer, const float* x, int64_t n, int64_t k,
                                        const int32_t* ids, const float* weights, float* out) {
  const ModelConfig& c = model_->config();
  const int64_t hidden = c.hidden_size, rows = n * k;
  if (layer < 0 || layer >= c.num_hidden_layers || !c.IsMoeLayer(layer)) {
    return absl::FailedPreconditionError(absl::StrCat("layer ", layer, " is not a MoE layer"));
  }
  std::vector<int64_t> start, row_of_slot;
  MOESERVE_RETURN_IF_ERROR(
      GroupSlotsByExpert(ids, rows, c.n_routed_experts, &start, &row_of_slot));
  std::vector<ExpertGroup> groups;
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    const int64_t m = start[e + 1] - start[e];
    if (m == 0) continue;
    const std::unique_ptr<Uploaded>& u = experts_[layer][e];
    if (u == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert ", e, " of layer ", layer, " is not loaded in this process"));
    }
    ExpertGroup g = u->group;
    g.offset = start[e];
    g.count = m;
    groups.push_back(g);
  }
  std::vector<float> xs(static_cast<size_t>(rows * hidden)), ys(xs.size());
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(&xs[row_of_slot[i] * hidden], x + (i / k) * hidden, sizeof(float) * hidden);
  }
  MOESERVE_ASSIGN_OR_RETURN(float* dx, Scratch(0, rows * hidden));
  MOESERVE_ASSIGN_OR_RETURN(float* dy, Scratch(1, rows * hidden));
  MOESERVE_RETURN_IF_ERROR(backend_->CopyToBackend(dx, xs.data(), rows * hidden * 4));
  GroupedExpertsArgs a;
  a.x = dx;
  a.hidden = hidden;
  a.groups = groups;
  a.out = dy;
  MOESERVE_RETURN_IF_ERROR(backend_->GroupedExperts(a));
  MOESERVE_RETURN_IF_ERROR(backend_->CopyToHost(ys.data(), dy, rows * hidden * 4));
  CombineSlots(ys.data(), row_of_slot.data(), weights, k, hidden, 0, n, out);
  return absl::OkStatus();
}

}  // namespace moeserve::engine
