#include "engine/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/linear.h"
#include "engine/model/local_experts.h"
#include "engine/model/ops.h"

namespace moeserve::engine::cpu {
namespace {

class HostBuffer final : public Buffer {
 public:
  HostBuffer(void* data, int64_t bytes, MemoryType type)
      : data_(data), bytes_(bytes), type_(type) {}
  ~HostBuffer() override { std::free(data_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() const override { return data_; }
  int64_t bytes() const override { return bytes_; }
  MemoryType type() const override { return type_; }

 private:
  void* data_;
  int64_t bytes_;
  MemoryType type_;
};

// W_real = W * scale_inv[r/128][c/128], widened to f32.
void DequantizeFp8(const WeightView& w, std::vector<float>* out) {
  out->resize(static_cast<size_t>(w.rows * w.cols));
  const uint8_t* src = static_cast<const uint8_t*>(w.data);
  const int64_t scale_cols = (w.cols + kFp8BlockSize - 1) / kFp8BlockSize;
  for (int64_t r = 0; r < w.rows; ++r) {
    const float* scale_row = w.scale_inv + (r / kFp8BlockSize) * scale_cols;
    for (int64_t c = 0; c < w.cols; ++c) {
      (*out)[r * w.cols + c] = F8E4M3ToF32(src[r * w.cols + c]) * scale_row[c / kFp8BlockSize];
    }
  }
}

// One row of Sample (see SampleArgs).
int32_t SampleRow(const float* logits, int64_t vocab, float temperature, float top_p, float uniform,
                  std::vector<float>* probs, std::vector<int32_t>* order) {
  const int32_t best = ArgmaxOf({logits, static_cast<size_t>(vocab)}, vocab);
  if (temperature == 0.0f) return best;
  const float mx = logits[best];
  probs->resize(vocab);
  for (int64_t i = 0; i < vocab; ++i) (*probs)[i] = std::exp((logits[i] - mx) / temperature);
  order->resize(vocab);
  std::iota(order->begin(), order->end(), 0);
  const std::vector<float>& p = *probs;
  std::stable_sort(order->begin(), order->end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  double total = 0;
  for (float v : p) total += v;
  const double keep_mass = static_cast<double>(top_p) * total;
  int64_t kept = vocab;
  double kept_total = total;
  double run = 0;
  for (int64_t j = 0; j < vocab; ++j) {
    run += p[(*order)[j]];
    if (run >= keep_mass) {
      kept = j + 1;
      kept_total = run;
      break;
    }
  }
  const double target = static_cast<double>(uniform) * kept_total;
  run = 0;
  for (int64_t j = 0; j < kept; ++j) {
    run += p[(*order)[j]];
    if (run > target) return (*order)[j];
  }
  return (*order)[kept - 1];
}

}  // namespace

class CpuBackend::CpuGraph final : public Graph {
 public:
  CpuGraph(const CpuBackend* owner, std::vector<Call> calls)
      : owner_(owner), calls_(std::move(calls)) {}
  const CpuBackend* owner() const { return owner_; }
  const std::vector<Call>& calls() const { return calls_; }

 private:
  const CpuBackend* owner_;
  std::vector<Call> calls_;
};

CpuBackend::CpuBackend(int threads) {
  if (threads > 1) pool_ = std::make_unique<ThreadPool>(threads);
}

CpuBackend::~CpuBackend() = default;

bool CpuBackend::Supports(OpKind op, DType dtype) const { return FullSupport(op, dtype); }

absl::Status CpuBackend::RefuseWhileCapturing(const char* what) const {
  if (capture_ == nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(what, " while capturing a graph"));
}

absl::Status CpuBackend::Record(Call call) {
  capture_->push_back(std::move(call));
  return absl::OkStatus();
}

absl::Status CpuBackend::BeginCapture() {
  MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("BeginCapture"));
  capture_ = std::make_unique<std::vector<Call>>();
  return absl::OkStatus();
}

absl::StatusOr<GraphPtr> CpuBackend::EndCapture() {
  if (capture_ == nullptr) return absl::FailedPreconditionError("EndCapture without a capture");
  std::unique_ptr<std::vector<Call>> calls = std::move(capture_);
  return GraphPtr(new CpuGraph(this, std::move(*calls)));
}

absl::Status CpuBackend::Replay(const Graph& graph) {
  MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("Replay"));
  const CpuGraph* g = dynamic_cast<const CpuGraph*>(&graph);
  if (g == nullptr || g->owner() != this) {
    return absl::FailedPreconditionError("Replay of a graph another backend captured");
  }
  for (const Call& call : g->calls()) MOESERVE_RETURN_IF_ERROR(call());
  return absl::OkStatus();
}

absl::StatusOr<BufferPtr> CpuBackend::Allocate(int64_t bytes, MemoryType type) {
  if (bytes < 0) return absl::InvalidArgumentError("Allocate: bytes < 0");
  MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("Allocate"));
  constexpr int64_t kAlign = 64;
  const int64_t rounded = std::max<int64_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  void* data = std::aligned_alloc(kAlign, static_cast<size_t>(rounded));
  if (data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cpu: cannot allocate ", bytes, " bytes"));
  }
  return BufferPtr(new HostBuffer(data, bytes, type));
}

absl::Status CpuBackend::CopyToBackend(void* dst, const void* src, int64_t bytes) {
  MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("CopyToBackend"));
  if (bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* dst, const void* src, int64_t bytes) {
  MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("CopyToHost"));
  if (bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyWithin(void* dst, const void* src, int64_t bytes) {
  if (bytes < 0) return absl::InvalidArgumentError("CopyWithin: bytes < 0");
  if (capture_ != nullptr) {
    return Record([this, dst, src, bytes] { return CopyWithin(dst, src, bytes); });
  }
  if (bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyWithin2D(void* dst, int64_t ld_dst, const void* src, int64_t ld_src,
                                      int64_t rows, int64_t row_bytes) {
  MOESERVE_RETURN_IF_ERROR(ValidateCopy2D(ld_dst, ld_src, rows, row_bytes));
  if (capture_ != nullptr) {
    return Record([=, this] { return CopyWithin2D(dst, ld_dst, src, ld_src, rows, row_bytes); });
  }
  if (row_bytes == 0) return absl::OkStatus();
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<char*>(dst) + r * ld_dst, static_cast<const char*>(src) + r * ld_src,
                static_cast<size_t>(row_bytes));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Gemm(const GemmArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateGemm(a));
  if (capture_ != nullptr) return Record([this, a] { return Gemm(a); });
  if (a.m == 0) return absl::OkStatus();
  Matrix w;
  w.rows = a.w.rows;
  w.cols = a.w.cols;
  if (a.w.dtype == DType::kF8E4M3) {
    DequantizeFp8(a.w, &dequant_);
    w.dtype = DType::kF32;
    w.data = dequant_.data();
  } else {
    w.dtype = a.w.dtype;
    w.data = a.w.data;
  }
  const int64_t elem = a.w.dtype == DType::kF32 ? 4 : 2;  // batch > 1: kF32 or kBf16
  for (int64_t i = 0; i < a.batch; ++i) {
    if (i > 0) w.data = static_cast<const char*>(a.w.data) + i * a.stride_w * elem;
    Linear(a.x + i * a.stride_x, a.m, a.ldx, w, a.y + i * a.stride_y, a.ldy, pool_.get());
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNorm(const RmsNormArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateRmsNorm(a));
  if (capture_ != nullptr) return Record([this, a] { return RmsNorm(a); });
  for (int64_t r = 0; r < a.rows; ++r) {
    ops::RmsNorm(a.x + r * a.ldx, a.w, a.dim, a.eps, a.out + r * a.ld_out);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Rope(const RopeArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateRope(a));
  if (capture_ != nullptr) return Record([this, a] { return Rope(a); });
  const std::vector<float> inv_freq(a.inv_freq, a.inv_freq + a.dim / 2);
  std::vector<float> cos_sin(a.dim);
  for (int64_t r = 0; r < a.rows; ++r) {
    ops::RopeAngles(inv_freq, a.mscale, a.positions[r / a.rows_per_position], cos_sin.data());
    ops::ApplyRope(a.x + r * a.ld + a.offset, a.dim, cos_sin.data());
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Gate(const GateArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateGate(a));
  if (capture_ != nullptr) return Record([this, a] { return Gate(a); });
  ModelConfig c;
  c.n_routed_experts = a.config.n_routed_experts;
  c.num_experts_per_tok = a.config.num_experts_per_tok;
  c.n_group = a.config.n_group;
  c.topk_group = a.config.topk_group;
  c.norm_topk_prob = a.config.norm_topk_prob;
  c.routed_scaling_factor = a.config.routed_scaling_factor;
  c.scoring_func = a.config.scoring_func;
  c.topk_method = a.config.topk_method;
  const int64_t e = c.n_routed_experts, k = c.num_experts_per_tok;
  for (int64_t t = 0; t < a.tokens; ++t) {
    ops::RouteToken(c, a.logits + t * e, a.bias, a.ids + t * k, a.weights + t * k);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  if (n < 0) return absl::InvalidArgumentError("SiluMul: n < 0");
  if (capture_ != nullptr) {
    return Record([=, this] { return SiluMul(gate, up, n, out); });
  }
  ops::SiluMul(gate, up, n, out);
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(float* x, const float* y, int64_t n) {
  if (n < 0) return absl::InvalidArgumentError("Add: n < 0");
  if (capture_ != nullptr) return Record([=, this] { return Add(x, y, n); });
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::Embedding(const EmbeddingArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateEmbedding(a));
  if (capture_ != nullptr) return Record([this, a] { return Embedding(a); });
  for (int64_t r = 0; r < a.rows; ++r) {
    float* out = a.out + r * a.dim;
    const int32_t id = a.ids[r];
    if (id < 0 || id >= a.vocab) {
      std::fill(out, out + a.dim, 0.0f);
    } else if (a.dtype == DType::kF32) {
      std::memcpy(out, static_cast<const float*>(a.table) + id * a.dim, sizeof(float) * a.dim);
    } else {
      const uint16_t* src = static_cast<const uint16_t*>(a.table) + id * a.dim;
      for (int64_t c = 0; c < a.dim; ++c) out[c] = Bf16ToF32(src[c]);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::GroupedExperts(const GroupedExpertsArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateGroupedExperts(a));
  MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("GroupedExperts (a host group table)"));
  for (const ExpertGroup& g : a.groups) {
    if (g.count == 0) continue;
    const int64_t inter = g.gate.rows;
    scratch_.resize(static_cast<size_t>(2 * g.count * inter));
    float* gate = scratch_.data();
    float* up = gate + g.count * inter;
    const float* x = a.x + g.offset * a.hidden;
    MOESERVE_RETURN_IF_ERROR(Gemm({x, g.count, a.hidden, g.gate, gate, inter}));
    MOESERVE_RETURN_IF_ERROR(Gemm({x, g.count, a.hidden, g.up, up, inter}));
    ops::SiluMul(gate, up, g.count * inter, gate);
    MOESERVE_RETURN_IF_ERROR(
        Gemm({gate, g.count, inter, g.down, a.out + g.offset * a.hidden, a.hidden}));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RoutedExperts(const RoutedExpertsArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateRoutedExperts(a));
  if (capture_ != nullptr) return Record([this, a] { return RoutedExperts(a); });
  if (a.n == 0 || a.k == 0) return absl::OkStatus();
  // LocalExpertExecutor's operations: the slots sorted by expert, each expert's rows through
  // GroupedExperts, each token's outputs summed in its top-k order.
  const int64_t rows = a.n * a.k;
  std::vector<int64_t> start, row_of_slot;
  MOESERVE_RETURN_IF_ERROR(GroupSlotsByExpert(a.ids, rows, a.n_experts, &start, &row_of_slot));
  std::vector<ExpertGroup> groups;
  for (int64_t e = 0; e < a.n_experts; ++e) {
    if (start[e + 1] == start[e]) continue;
    const ExpertWeightPointers& p = a.experts[e];
    ExpertGroup g;
    g.offset = start[e];
    g.count = start[e + 1] - start[e];
    g.gate = {a.dtype, a.inter, a.hidden, p.gate, p.gate_scale};
    g.up = {a.dtype, a.inter, a.hidden, p.up, p.up_scale};
    g.down = {a.dtype, a.hidden, a.inter, p.down, p.down_scale};
    groups.push_back(g);
  }
  std::vector<float> xs(static_cast<size_t>(rows * a.hidden)), ys(xs.size());
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(&xs[row_of_slot[i] * a.hidden], a.x + (i / a.k) * a.hidden,
                sizeof(float) * a.hidden);
  }
  GroupedExpertsArgs g;
  g.x = xs.data();
  g.hidden = a.hidden;
  g.groups = groups;
  g.out = ys.data();
  MOESERVE_RETURN_IF_ERROR(GroupedExperts(g));
  CombineSlots(ys.data(), row_of_slot.data(), a.weights, a.k, a.hidden, 0, a.n, a.out);
  return absl::OkStatus();
}

absl::StatusOr<MemoryInfo> CpuBackend::DeviceMemory() {
  std::ifstream in("/proc/meminfo");
  MemoryInfo m;
  std::string key, unit;
  int64_t kib = 0;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") m.total_bytes = kib * 1024;
    if (key == "MemAvailable:") m.free_bytes = kib * 1024;
  }
  if (m.total_bytes <= 0 || m.free_bytes <= 0) {
    return absl::UnavailableError("/proc/meminfo gives no MemTotal and MemAvailable");
  }
  return m;
}

absl::Status CpuBackend::ScatterRows(const ScatterRowsArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateScatterRows(a));
  if (capture_ != nullptr) return Record([this, a] { return ScatterRows(a); });
  for (int64_t i = 0; i < a.n && a.width > 0; ++i) {
    if (a.rows[i] < 0) continue;  // padding
    const float* src = a.src + i * a.ld_src;
    if (a.dst_dtype == DType::kBf16) {
      uint16_t* dst = static_cast<uint16_t*>(a.dst) + a.rows[i] * a.ld_dst;
      for (int64_t c = 0; c < a.width; ++c) dst[c] = F32ToBf16(src[c]);
    } else {
      std::memcpy(static_cast<float*>(a.dst) + a.rows[i] * a.ld_dst, src,
                  sizeof(float) * a.width);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::LatentAttention(const LatentAttentionArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateLatentAttention(a));
  if (capture_ != nullptr) return Record([this, a] { return LatentAttention(a); });
  std::vector<float> qt(static_cast<size_t>(a.lat * kAttentionLanes), 0.0f);
  std::vector<float> scratch;
  std::vector<const float*> blocks;
  // A BF16 cache: the rows an item reads, widened to float32 (exact) once per group, since the
  // items of a group read the same rows.
  std::vector<float> widened;
  const int64_t block_elems = a.block_tokens * a.lat;
  for (int64_t i = 0; i < a.items; ++i) {
    const int64_t len = a.lens[i];
    if (len < 1 || (len + a.block_tokens - 1) / a.block_tokens > a.max_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("LatentAttention: item ", i, " length ", len, " outside the block table"));
    }
    const bool group_start = i % a.group == 0;
    const int64_t first_of_group = i - i % a.group;
    if (len != a.lens[first_of_group] || a.table_rows[i] != a.table_rows[first_of_group]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LatentAttention: item ", i, " differs from its group's first in row or length"));
    }
    const int32_t* table = a.block_tables + static_cast<int64_t>(a.table_rows[i]) * a.max_blocks;
    if (group_start) blocks.clear();
    for (int64_t b = 0; group_start && b * a.block_tokens < len; ++b) {
      const int64_t first = (static_cast<int64_t>(table[b]) * a.num_layers + a.layer) * block_elems;
      if (a.cache_dtype == DType::kF32) {
        blocks.push_back(static_cast<const float*>(a.cache) + first);
        continue;
      }
      widened.resize(static_cast<size_t>((b + 1) * block_elems));
      const int64_t rows = std::min(a.block_tokens, len - b * a.block_tokens);
      const uint16_t* src = static_cast<const uint16_t*>(a.cache) + first;
      for (int64_t e = 0; e < rows * a.lat; ++e) widened[b * block_elems + e] = Bf16ToF32(src[e]);
    }
    if (group_start && a.cache_dtype == DType::kBf16) {
      for (int64_t b = 0; b * a.block_tokens < len; ++b) {
        blocks.push_back(widened.data() + b * block_elems);
      }
    }
    const float* q = a.q + i * a.ldq;
    for (int64_t d = 0; d < a.lat; ++d) qt[d * kAttentionLanes] = q[d];
    int64_t lens[kAttentionLanes] = {len};
    LatentAttentionTile tile;
    tile.qt = qt.data();
    tile.nq = 1;
    tile.len = lens;
    tile.blocks = blocks.data();
    tile.block_tokens = a.block_tokens;
    tile.lat = a.lat;
    tile.kvr = a.kvr;
    tile.scale = a.scale;
    tile.out = a.out + i * a.ld_out;
    tile.out_stride = a.ld_out;
    cpu::LatentAttention(tile, &scratch);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Sample(const SampleArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateSample(a));
  if (capture_ != nullptr) return Record([this, a] { return Sample(a); });
  std::vector<float> probs;
  std::vector<int32_t> order;
  for (int64_t r = 0; r < a.rows; ++r) {
    a.ids[r] = SampleRow(a.logits + r * a.ld, a.vocab, a.temperature[r], a.top_p[r], a.uniform[r],
                         &probs, &order);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Argmax(const ArgmaxArgs& a) {
  MOESERVE_RETURN_IF_ERROR(ValidateArgmax(a));
  if (capture_ != nullptr) return Record([this, a] { return Argmax(a); });
  for (int64_t r = 0; r < a.rows; ++r) {
    a.ids[r] = ArgmaxOf({a.logits + r * a.ld, static_cast<size_t>(a.vocab)}, a.vocab);
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine::cpu
