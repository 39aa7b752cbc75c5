#include "engine/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/dtype.h"

namespace moeserve::engine {
namespace {

absl::Status Invalid(const char* op, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

}  // namespace

bool FullSupport(OpKind op, DType dtype) {
  switch (op) {
    case OpKind::kGemm:
    case OpKind::kGroupedExperts:
    case OpKind::kRoutedExperts:
      return dtype == DType::kF32 || dtype == DType::kBf16 || dtype == DType::kF8E4M3;
    case OpKind::kEmbedding:
      return dtype == DType::kF32 || dtype == DType::kBf16;
    case OpKind::kRmsNorm:
    case OpKind::kRope:
    case OpKind::kGate:
    case OpKind::kSiluMul:
    case OpKind::kAdd:
    case OpKind::kLatentAttention:
    case OpKind::kSample:
    case OpKind::kArgmax:
    case OpKind::kScatterRows:
      return dtype == DType::kF32;
  }
  return false;
}

GateConfig GateConfigFrom(const ModelConfig& config) {
  GateConfig g;
  g.n_routed_experts = config.n_routed_experts;
  g.num_experts_per_tok = config.num_experts_per_tok;
  g.n_group = config.n_group;
  g.topk_group = config.topk_group;
  g.norm_topk_prob = config.norm_topk_prob;
  g.routed_scaling_factor = config.routed_scaling_factor;
  g.scoring_func = config.scoring_func;
  g.topk_method = config.topk_method;
  return g;
}

absl::Status ValidateWeight(const WeightView& w, const char* what) {
  if (w.data == nullptr || w.rows <= 0 || w.cols <= 0) {
    return Invalid(what, absl::StrCat("empty weight [", w.rows, ", ", w.cols, "]"));
  }
  switch (w.dtype) {
    case DType::kF32:
    case DType::kBf16:
      return absl::OkStatus();
    case DType::kF8E4M3:
      if (w.scale_inv == nullptr) return Invalid(what, "F8_E4M3 weight without scale_inv");
      return absl::OkStatus();
    case DType::kF16:
      break;
  }
  return absl::UnimplementedError(absl::StrCat(what, ": weight dtype ", DTypeName(w.dtype)));
}

absl::Status ValidateGemm(const GemmArgs& a) {
  if (absl::Status s = ValidateWeight(a.w, "Gemm"); !s.ok()) return s;
  if (a.m < 0) return Invalid("Gemm", "m < 0");
  if (a.batch < 1 || a.stride_x < 0 || a.stride_w < 0 || a.stride_y < 0) {
    return Invalid("Gemm", "batch < 1 or a negative batch stride");
  }
  if (a.batch > 1 && a.w.dtype == DType::kF8E4M3) {
    return Invalid("Gemm", "batched products take F32 or BF16 weights");
  }
  if (a.m == 0) return absl::OkStatus();
  if (a.x == nullptr || a.y == nullptr) return Invalid("Gemm", "null x or y");
  if (a.ldx < a.w.cols || a.ldy < a.w.rows) {
    return Invalid("Gemm", absl::StrCat("strides ldx ", a.ldx, " ldy ", a.ldy, " below k ",
                                        a.w.cols, " n ", a.w.rows));
  }
  return absl::OkStatus();
}

absl::Status ValidateRmsNorm(const RmsNormArgs& a) {
  if (a.rows < 0 || a.dim <= 0) return Invalid("RmsNorm", "rows < 0 or dim <= 0");
  if (a.rows == 0) return absl::OkStatus();
  if (a.x == nullptr || a.w == nullptr || a.out == nullptr) return Invalid("RmsNorm", "null");
  if (a.ldx < a.dim || a.ld_out < a.dim) return Invalid("RmsNorm", "stride below dim");
  return absl::OkStatus();
}

absl::Status ValidateRope(const RopeArgs& a) {
  if (a.rows < 0 || a.dim <= 0 || a.dim % 2 != 0) return Invalid("Rope", "dim must be even > 0");
  if (a.rows == 0) return absl::OkStatus();
  if (a.x == nullptr || a.positions == nullptr || a.inv_freq == nullptr) {
    return Invalid("Rope", "null pointer");
  }
  if (a.offset < 0 || a.ld < a.offset + a.dim) return Invalid("Rope", "slice past the row");
  if (a.rows_per_position <= 0) return Invalid("Rope", "rows_per_position <= 0");
  return absl::OkStatus();
}

absl::Status ValidateGate(const GateArgs& a) {
  const GateConfig& c = a.config;
  if (a.tokens < 0) return Invalid("Gate", "tokens < 0");
  if (c.n_routed_experts <= 0 || c.num_experts_per_tok <= 0 ||
      c.num_experts_per_tok > c.n_routed_experts) {
    return Invalid("Gate", "need 0 < num_experts_per_tok <= n_routed_experts");
  }
  if (c.n_group <= 0 || c.n_routed_experts % c.n_group != 0 || c.topk_group <= 0 ||
      c.topk_group > c.n_group) {
    return Invalid("Gate", "inconsistent n_group / topk_group");
  }
  if (c.topk_method == TopkMethod::kNoauxTc && c.n_group > 1 &&
      c.n_routed_experts / c.n_group < 2) {
    return Invalid("Gate", "noaux_tc needs at least 2 experts per group");
  }
  if (a.tokens > 0 && (a.logits == nullptr || a.ids == nullptr || a.weights == nullptr)) {
    return Invalid("Gate", "null pointer");
  }
  return absl::OkStatus();
}

absl::Status ValidateEmbedding(const EmbeddingArgs& a) {
  if (a.dtype != DType::kF32 && a.dtype != DType::kBf16) {
    return absl::UnimplementedError(absl::StrCat("Embedding: table dtype ", DTypeName(a.dtype)));
  }
  if (a.rows < 0 || a.vocab <= 0 || a.dim <= 0) return Invalid("Embedding", "bad shape");
  if (a.rows > 0 && (a.table == nullptr || a.ids == nullptr || a.out == nullptr)) {
    return Invalid("Embedding", "null pointer");
  }
  return absl::OkStatus();
}

absl::Status ValidateGroupedExperts(const GroupedExpertsArgs& a) {
  if (a.hidden <= 0) return Invalid("GroupedExperts", "hidden <= 0");
  for (const ExpertGroup& g : a.groups) {
    if (g.offset < 0 || g.count < 0) return Invalid("GroupedExperts", "negative offset/count");
    if (g.count == 0) continue;
    if (a.x == nullptr || a.out == nullptr) return Invalid("GroupedExperts", "null x or out");
    for (const WeightView* w : {&g.gate, &g.up, &g.down}) {
      if (absl::Status s = ValidateWeight(*w, "GroupedExperts"); !s.ok()) return s;
    }
    if (g.gate.cols != a.hidden || g.up.cols != a.hidden || g.up.rows != g.gate.rows ||
        g.down.rows != a.hidden || g.down.cols != g.gate.rows) {
      return Invalid("GroupedExperts", "gate/up/down shapes do not match hidden and inter");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRoutedExperts(const RoutedExpertsArgs& a) {
  if (a.n < 0 || a.k < 0) return Invalid("RoutedExperts", "n < 0 or k < 0");
  if (a.n == 0 || a.k == 0) return absl::OkStatus();
  if (a.hidden <= 0 || a.inter <= 0 || a.n_experts <= 0) {
    return Invalid("RoutedExperts", "hidden, inter and n_experts must be > 0");
  }
  if (a.x == nullptr || a.experts == nullptr || a.ids == nullptr || a.weights == nullptr ||
      a.out == nullptr) {
    return Invalid("RoutedExperts", "null pointer");
  }
  if (a.dtype != DType::kF32 && a.dtype != DType::kBf16 && a.dtype != DType::kF8E4M3) {
    return Invalid("RoutedExperts", "weights must be F32, BF16 or F8_E4M3");
  }
  return absl::OkStatus();
}

absl::Status ValidateScatterRows(const ScatterRowsArgs& a) {
  if (a.n < 0 || a.width < 0) return Invalid("ScatterRows", "n < 0 or width < 0");
  if (a.n == 0 || a.width == 0) return absl::OkStatus();
  if (a.src == nullptr || a.rows == nullptr || a.dst == nullptr) {
    return Invalid("ScatterRows", "null pointer");
  }
  if (a.ld_src < a.width || a.ld_dst < a.width) return Invalid("ScatterRows", "stride below width");
  if (a.dst_dtype != DType::kF32 && a.dst_dtype != DType::kBf16) {
    return Invalid("ScatterRows", "the destination must be F32 or BF16");
  }
  return absl::OkStatus();
}

absl::Status ValidateLatentAttention(const LatentAttentionArgs& a) {
  if (a.items < 0) return Invalid("LatentAttention", "items < 0");
  if (a.group < 1 || a.items % a.group != 0) {
    return Invalid("LatentAttention", "group must be >= 1 and divide items");
  }
  if (a.items == 0) return absl::OkStatus();
  if (a.q == nullptr || a.table_rows == nullptr || a.lens == nullptr || a.block_tables == nullptr ||
      a.cache == nullptr || a.out == nullptr) {
    return Invalid("LatentAttention", "null pointer");
  }
  if (a.kvr <= 0 || a.lat < a.kvr || a.ldq < a.lat || a.ld_out < a.kvr) {
    return Invalid("LatentAttention", "need 0 < kvr <= lat <= ldq and kvr <= ld_out");
  }
  if (a.block_tokens <= 0 || a.max_blocks <= 0 || a.num_layers <= 0 || a.layer < 0 ||
      a.layer >= a.num_layers) {
    return Invalid("LatentAttention", "bad block_tokens, max_blocks or layer");
  }
  if (a.cache_dtype != DType::kF32 && a.cache_dtype != DType::kBf16) {
    return Invalid("LatentAttention", "the cache must be F32 or BF16");
  }
  return absl::OkStatus();
}

absl::Status ValidateSample(const SampleArgs& a) {
  if (a.rows < 0 || a.vocab <= 0 || a.ld < a.vocab) return Invalid("Sample", "bad shape");
  if (a.rows > 0 && (a.logits == nullptr || a.temperature == nullptr || a.top_p == nullptr ||
                     a.uniform == nullptr || a.ids == nullptr)) {
    return Invalid("Sample", "null pointer");
  }
  return absl::OkStatus();
}

int32_t ArgmaxOf(absl::Span<const float> logits, int64_t vocab) {
  const int64_t n = std::min<int64_t>(vocab, static_cast<int64_t>(logits.size()));
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

absl::Status ValidateArgmax(const ArgmaxArgs& a) {
  if (a.rows < 0 || a.vocab <= 0 || a.ld < a.vocab) return Invalid("Argmax", "bad shape");
  if (a.rows > 0 && (a.logits == nullptr || a.ids == nullptr)) {
    return Invalid("Argmax", "null pointer");
  }
  return absl::OkStatus();
}

absl::Status ValidateCopy2D(int64_t ld_dst, int64_t ld_src, int64_t rows, int64_t row_bytes) {
  if (rows < 0 || row_bytes < 0 || ld_dst < row_bytes || ld_src < row_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("2-D copy of ", rows, " rows of ", row_bytes,
                                                   " bytes with strides ", ld_dst, " and ",
                                                   ld_src));
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
