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
  x->tables_.resize(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (x->experts_[l].empty()) continue;
    std::vector<ExpertWeightPointers> table;
    for (const std::unique_ptr<Uploaded>& u : x->experts_[l]) {
      if (u == nullptr || u->group.gate.dtype != x->experts_[l][0]->group.gate.dtype) break;
      table.push_back({u->group.gate.data, u->group.up.data, u->group.down.data, nullptr, nullptr,
                       nullptr});
    }
    const DType dtype = x->experts_[l][0] != nullptr ? x->experts_[l][0]->group.gate.dtype
                                                     : DType::kF32;
    if (static_cast<int64_t>(table.size()) != c.n_routed_experts ||
        !backend->Supports(OpKind::kRoutedExperts, dtype)) {
      continue;
    }
    const int64_t bytes = static_cast<int64_t>(table.size() * sizeof(ExpertWeightPointers));
    MOESERVE_ASSIGN_OR_RETURN(x->tables_[l], backend->Allocate(bytes, MemoryType::kDevice));
    MOESERVE_RETURN_IF_ERROR(backend->CopyToBackend(x->tables_[l]->data(), table.data(), bytes));
  }
  MOESERVE_RETURN_IF_ERROR(backend->Synchronize());
  return x;
}

bool BackendExpertExecutor::RunsOnBackend(const Backend* backend, int64_t layer) const {
  return backend == backend_ && layer >= 0 && layer < static_cast<int64_t>(tables_.size()) &&
         tables_[layer] != nullptr;
}

absl::Status BackendExpertExecutor::RunOnBackend(int64_t layer, const float* x, int64_t n,
                                                 int64_t k, const int32_t* ids,
                                                 const float* weights, float* out) {
  if (!RunsOnBackend(backend_, layer)) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer, "'s routed experts do not all run on the backend"));
  }
  const ModelConfig& c = model_->config();
  RoutedExpertsArgs a;
  a.x = x;
  a.n = n;
  a.k = k;
  a.hidden = c.hidden_size;
  a.inter = c.moe_intermediate_size;
  a.n_experts = c.n_routed_experts;
  a.dtype = experts_[layer][0]->group.gate.dtype;
  a.experts = static_cast<const ExpertWeightPointers*>(tables_[layer]->data());
  a.ids = ids;
  a.weights = weights;
  a.out = out;
  return backend_->RoutedExperts(a);
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

absl::Status BackendExpertExecutor::RunGroups(int64_t layer, absl::Span<const int32_t> experts,
                                              absl::Span<const int64_t> counts, const float* x,
                                              float* out) {
  const ModelConfig& c = model_->config();
  if (layer < 0 || layer >= c.num_hidden_layers || !c.IsMoeLayer(layer)) {
    return absl::FailedPreconditionError(absl::StrCat("layer ", layer, " is not a MoE layer"));
  }
  if (experts.size() != counts.size()) {
    return absl::InvalidArgumentError(absl::StrCat(experts.size(), " experts but ",
                                                   counts.size(), " row counts"));
  }
  std::vector<ExpertGroup> groups;
  int64_t rows = 0;
  for (size_t i = 0; i < experts.size(); ++i) {
    const int32_t e = experts[i];
    if (counts[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("negative row count for expert ", e));
    }
    if (e < 0 || e >= c.n_routed_experts || experts_[layer][e] == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert ", e, " of layer ", layer, " is not loaded in this process"));
    }
    if (counts[i] > 0) {
      ExpertGroup g = experts_[layer][e]->group;
      g.offset = rows;
      g.count = counts[i];
      groups.push_back(g);
    }
    rows += counts[i];
  }
  if (rows == 0) return absl::OkStatus();
  const int64_t floats = rows * c.hidden_size;
  MOESERVE_ASSIGN_OR_RETURN(float* dx, Scratch(0, floats));
  MOESERVE_ASSIGN_OR_RETURN(float* dy, Scratch(1, floats));
  MOESERVE_RETURN_IF_ERROR(backend_->CopyToBackend(dx, x, floats * 4));
  GroupedExpertsArgs a;
  a.x = dx;
  a.hidden = c.hidden_size;
  a.groups = groups;
  a.out = dy;
  MOESERVE_RETURN_IF_ERROR(backend_->GroupedExperts(a));
  return backend_->CopyToHost(out, dy, floats * 4);
}

}  // namespace moeserve::engine
