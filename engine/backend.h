#ifndef MOESERVE_ENGINE_BACKEND_H_
#define MOESERVE_ENGINE_BACKEND_H_

// Backend: the coarse DeepSeek-V3 operations behind one interface (ggml's backend idea).
//
// Summary
//  - CreateBackend("cpu" | "cuda") (engine/backend_registry.h) returns a BackendPtr.
//  - Allocate(bytes, MemoryType) gives a Buffer; kDevice memory is what the ops read and write.
//    CopyToBackend / CopyToHost / CopyWithin move bytes; CopyToHost waits for the stream.
//  - Ops: Gemm (F32, BF16, F8_E4M3 with 128x128 block scales; batched over heads), RmsNorm,
//    Rope, Gate (MoE router), SiluMul, Add, Embedding, GroupedExperts (SwiGLU over
//    expert-sorted rows, group table on the host), RoutedExperts (the same with the routing in
//    backend memory: no host round trip), ScatterRows (cache writes), LatentAttention (paged
//    MLA, absorbed form, KvCache layout) and Sample (argmax/top-p).
//  - Every pointer an op takes is in the backend's memory (Allocate(kDevice)), except the
//    GroupedExperts group table, which is host data (it decides launch shapes).
//  - Ops are enqueued in order on one stream and may return before the work is done; errors
//    found on the host (bad shapes, unsupported dtypes) come back as Status at once, device
//    faults at the next Synchronize()/CopyToHost().
//  - Graphs: BeginCapture/EndCapture record a run of ops, Replay enqueues it again (CUDA
//    graphs: one launch for a decode step's few hundred kernels).
//  - The CPU backend (engine/cpu/cpu_backend.h) is the reference; it runs each op at once.
//  - CUDA (engine/cuda/): a skinny kernel for BF16 products of up to 8 rows (decode), cuBLASLt
//    for the rest of F32/BF16 Gemm (x rounded to bf16 for BF16 weights), a tiled kernel for FP8,
//    bf16 tensor cores (WMMA) for RoutedExperts, hand-written kernels for the rest, CUB's
//    segmented sort for top-p. Run on an H100 on 2026-11-24: tests/gpu/backend_parity_test.cc
//    (ctest -L gpu) checks every op against the CPU backend within its stated NMSE bound, and
//    tests/gpu/backend_model_gpu_test.cc the whole model (docs/DESIGN-NOTES.md has the figures).
//
// Thread-safety: a Backend is used by one thread at a time (the engine thread). Buffers must be
// released before the Backend that made them.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/config.h"
#include "engine/dtype.h"

namespace moeserve::engine {

enum class MemoryType { kHost, kDevice, kPinned };

// Memory from Backend::Allocate; freed by the destructor. Not copyable.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() const = 0;
  virtual int64_t bytes() const = 0;
  virtual MemoryType type() const = 0;

  template <typename T>
  T* as() const {
    return static_cast<T*>(data());
  }
};
using BufferPtr = std::unique_ptr<Buffer>;

enum class OpKind {
  kGemm,
  kRmsNorm,
  kRope,
  kGate,
  kSiluMul,
  kAdd,
  kEmbedding,
  kGroupedExperts,
  kRoutedExperts,
  kLatentAttention,
  kSample,
  kArgmax,
  kScatterRows,
};

// A weight matrix W[rows = n, cols = k] (row-major, Hugging Face's [out, in]) in backend memory.
// For kF8E4M3, scale_inv is f32 [ceil(n/128), ceil(k/128)] and W_real[r][c] =
// W[r][c] * scale_inv[r/128][c/128]; otherwise scale_inv is ignored.
struct WeightView {
  DType dtype = DType::kF32;  // kF32, kBf16 or kF8E4M3
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  const float* scale_inv = nullptr;
};

inline constexpr int64_t kFp8BlockSize = 128;

// y[m, w.rows] = x[m, w.cols] * W^T, f32 activations; x and y have row strides ldx and ldy
// (elements). y must not overlap x.
struct GemmArgs {
  const float* x = nullptr;
  int64_t m = 0;
  int64_t ldx = 0;
  WeightView w;
  float* y = nullptr;
  int64_t ldy = 0;
  // `batch` products of one shape at once (one per attention head, say): product i reads
  // x + i * stride_x and the weight at w.data + i * stride_w elements, and writes
  // y + i * stride_y. Strides >= 0; batch > 1 takes kF32 or kBf16 weights only.
  int64_t batch = 1;
  int64_t stride_x = 0;
  int64_t stride_w = 0;
  int64_t stride_y = 0;
};

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for each of `rows` rows of `dim` (ops::RmsNorm).
// out may alias x (same rows, same stride).
struct RmsNormArgs {
  const float* x = nullptr;
  int64_t ldx = 0;
  const float* w = nullptr;  // [dim]
  float* out = nullptr;
  int64_t ld_out = 0;
  int64_t rows = 0;
  int64_t dim = 0;
  double eps = 1e-6;
};

// For each row r, rotates the pairs (x[r*ld + offset + 2i], x[r*ld + offset + 2i + 1]),
// i < dim/2, by angle positions[r / rows_per_position] * inv_freq[i], cos and sin scaled by
// mscale: the same numbers as ops::RopeAngles + ops::ApplyRope. In place.
struct RopeArgs {
  float* x = nullptr;
  int64_t rows = 0;
  int64_t ld = 0;
  int64_t offset = 0;
  int64_t dim = 0;  // even
  const int32_t* positions = nullptr;
  int64_t rows_per_position = 1;    // e.g. the heads of one token
  const float* inv_freq = nullptr;  // [dim / 2]
  double mscale = 1.0;
};

// The ModelConfig fields the MoE gate reads (ops::RouteToken).
struct GateConfig {
  int64_t n_routed_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;
};
GateConfig GateConfigFrom(const ModelConfig& config);

// For each token t: ops::RouteToken over logits[t * n_routed_experts ...] (and the correction
// bias, may be null) into ids/weights[t * num_experts_per_tok ...].
struct GateArgs {
  const float* logits = nullptr;
  const float* bias = nullptr;
  int64_t tokens = 0;
  GateConfig config;
  int32_t* ids = nullptr;
  float* weights = nullptr;
};

// out[r, :] = table[ids[r], :] widened to f32 (table kF32 or kBf16, [vocab, dim]). Rows whose
// id is outside [0, vocab) are written as zeros (ids are validated by the caller; the device
// cannot report them without a synchronisation).
struct EmbeddingArgs {
  const void* table = nullptr;
  DType dtype = DType::kBf16;
  int64_t vocab = 0;
  int64_t dim = 0;
  const int32_t* ids = nullptr;
  int64_t rows = 0;
  float* out = nullptr;  // [rows, dim], contiguous
};

// One routed expert's rows of a GroupedExperts call: rows [offset, offset + count) of x.
struct ExpertGroup {
  int64_t offset = 0;
  int64_t count = 0;
  WeightView gate;  // [inter, hidden]
  WeightView up;    // [inter, hidden]
  WeightView down;  // [hidden, inter]
};

// For each group: out[rows] = down(silu(gate x[rows]) * up x[rows]). x and out are [*, hidden]
// contiguous, rows sorted by expert; rows in no group are left untouched. The group table is
// host memory; x and out are backend memory. out must not overlap x.
struct GroupedExpertsArgs {
  const float* x = nullptr;
  int64_t hidden = 0;
  absl::Span<const ExpertGroup> groups;
  float* out = nullptr;
};

// One routed expert's weights in backend memory, for RoutedExperts' table (itself in backend
// memory). The scales are the kF8E4M3 128x128 block scales (null otherwise).
struct ExpertWeightPointers {
  const void* gate = nullptr;  // [inter, hidden]
  const void* up = nullptr;    // [inter, hidden]
  const void* down = nullptr;  // [hidden, inter]
  const float* gate_scale = nullptr;
  const float* up_scale = nullptr;
  const float* down_scale = nullptr;
};

// One MoE layer's routed experts with the routing in backend memory, so that no host round trip
// is needed: for token t < n and slot j < k, with e = ids[t * k + j],
//   y_tj = down_e(silu(gate_e x_t) * up_e x_t),   out[t] = sum over j in order of
//   weights[t * k + j] * y_tj   (from zero, as CombineSlots sums).
// Every expert has one dtype and shape. x, ids, weights, experts and out are backend memory; out
// must not overlap x. An id outside [0, n_experts): the CPU backend refuses it (InvalidArgument);
// a device backend cannot report it without a synchronisation and counts that slot as zero.
// Over the CPU backend this is GroupedExperts over the slots sorted by expert plus CombineSlots,
// the operations of LocalExpertExecutor.
struct RoutedExpertsArgs {
  const float* x = nullptr;  // [n, hidden]
  int64_t n = 0;
  int64_t k = 0;
  int64_t hidden = 0;
  int64_t inter = 0;
  int64_t n_experts = 0;
  DType dtype = DType::kBf16;
  const ExpertWeightPointers* experts = nullptr;  // [n_experts]
  const int32_t* ids = nullptr;                   // [n * k]
  const float* weights = nullptr;                 // [n * k]
  float* out = nullptr;                           // [n, hidden]
};

// Paged MLA attention, weight-absorbed (cpu::LatentAttention's math). The cache has the
// KvCache layout: the row of (block, layer, slot) is
//   cache + ((block * num_layers + layer) * block_tokens + slot) * lat
// elements of cache_dtype (kF32, or kBf16: each element widened to float32 as it is read, all
// arithmetic float32 either way).
// Query item i (q + i * ldq: kvr latent floats then lat - kvr rope floats) attends over key
// positions [0, lens[i]) (lens[i] >= 1) of the sequence whose block table is
// block_tables + table_rows[i] * max_blocks; out[i * ld_out + c] = sum_s softmax_s(scale *
// <q_i, row_s>) * row_s[c], c < kvr.
struct LatentAttentionArgs {
  const float* q = nullptr;
  int64_t ldq = 0;
  int64_t items = 0;
  // Consecutive items sharing table_rows and lens (the heads of one query token); items % group
  // == 0. The backends may read each cached row once per group; results do not depend on it.
  int64_t group = 1;
  const int32_t* table_rows = nullptr;  // [items]
  const int32_t* lens = nullptr;        // [items]
  const int32_t* block_tables = nullptr;
  int64_t max_blocks = 0;  // row stride of block_tables
  const void* cache = nullptr;
  int64_t num_layers = 0;
  int64_t layer = 0;
  int64_t block_tokens = 0;
  int64_t lat = 0;
  int64_t kvr = 0;
  float scale = 1.0f;
  float* out = nullptr;
  int64_t ld_out = 0;
  DType cache_dtype = DType::kF32;
};

// dst[rows[i] * ld_dst + c] = src[i * ld_src + c] for i < n, c < width: rows scattered to
// their places (the new latents of a step into the paged cache). rows is [n] in backend memory,
// the ones >= 0 distinct; a row < 0 is skipped (a padding token of a replayed step's batch).
// The destination rows must not overlap src. dst holds elements of
// dst_dtype: kF32, or kBf16 (each value rounded to nearest even, F32ToBf16).
struct ScatterRowsArgs {
  const float* src = nullptr;
  int64_t ld_src = 0;
  int64_t n = 0;
  int64_t width = 0;
  const int64_t* rows = nullptr;
  void* dst = nullptr;
  int64_t ld_dst = 0;
  DType dst_dtype = DType::kF32;
};

// One token per row of logits [rows, vocab] (row stride ld). temperature[r] == 0: the argmax
// (lowest id on ties). Otherwise p = softmax((logits - max) / T); tokens are ordered by p
// descending (ties: lower id first); the kept set is the shortest prefix whose mass reaches
// top_p[r] * total; the token is the first kept one whose running mass exceeds uniform[r] *
// kept mass (the last kept token when rounding leaves none). temperature, top_p and uniform
// are [rows] in backend memory; uniform in [0, 1), top_p in (0, 1].
struct SampleArgs {
  const float* logits = nullptr;
  int64_t ld = 0;
  int64_t rows = 0;
  int64_t vocab = 0;
  const float* temperature = nullptr;
  const float* top_p = nullptr;
  const float* uniform = nullptr;
  int32_t* ids = nullptr;
};

// ids[r] = the argmax of logits row r's first `vocab` entries [rows, ld], lowest id on ties
// (Sample's greedy rows, without its sort workspace): greedy decoding on the device, so a step
// brings back 4 bytes a sequence instead of its vocab of logits. Rows must not hold NaN.
struct ArgmaxArgs {
  const float* logits = nullptr;
  int64_t ld = 0;
  int64_t rows = 0;
  int64_t vocab = 0;
  int32_t* ids = nullptr;
};

// A recorded run of one backend's ops (Backend::EndCapture), enqueued again by Backend::Replay.
// Released before the Backend that made it.
class Graph {
 public:
  virtual ~Graph() = default;
};
using GraphPtr = std::unique_ptr<Graph>;

// Free and total bytes of the memory kDevice buffers come from.
struct MemoryInfo {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};

// The compute interface. Every op returns InvalidArgument for inconsistent shapes or null
// pointers, Unimplemented for a dtype Supports() rejects, and Internal for a failed launch or
// library call. Device faults surface as Internal from Synchronize() or CopyToHost().
class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  // Whether `op` runs with this dtype (the weight or table dtype; kF32 for f32-only ops).
  virtual bool Supports(OpKind op, DType dtype) const = 0;

  // ResourceExhausted when the memory is not available. bytes may be 0.
  virtual absl::StatusOr<BufferPtr> Allocate(int64_t bytes, MemoryType type) = 0;
  // dst (backend memory) <- src (host). Ordered on the stream; the host may reuse pageable src
  // on return, pinned src only after the next Synchronize().
  virtual absl::Status CopyToBackend(void* dst, const void* src, int64_t bytes) = 0;
  // dst (host) <- src (backend memory), after all earlier work; the data is there on return.
  virtual absl::Status CopyToHost(void* dst, const void* src, int64_t bytes) = 0;
  // Within backend memory, ordered on the stream. The ranges must not overlap.
  virtual absl::Status CopyWithin(void* dst, const void* src, int64_t bytes) = 0;
  // `rows` runs of `row_bytes` within backend memory: run r from src + r * ld_src to
  // dst + r * ld_dst (strides in bytes, each at least row_bytes). Ordered on the stream; the
  // ranges must not overlap. InvalidArgument for negative sizes or strides below row_bytes.
  virtual absl::Status CopyWithin2D(void* dst, int64_t ld_dst, const void* src, int64_t ld_src,
                                    int64_t rows, int64_t row_bytes) = 0;
  // Waits for all enqueued work.
  virtual absl::Status Synchronize() = 0;
  // The device's memory now (cudaMemGetInfo; the CPU backend: the host's MemAvailable and
  // MemTotal). Other processes change it between calls.
  virtual absl::StatusOr<MemoryInfo> DeviceMemory() = 0;

  // Graphs (CUDA graphs; the CPU backend records the calls). Between BeginCapture and
  // EndCapture the ops, CopyWithin and CopyWithin2D are validated at once (an error comes back
  // from the call, as always) but not run: they are recorded, and each Replay enqueues them all,
  // in order, with the arguments they were given. Their pointers are read again at every replay:
  // the ops see what their buffers hold then, so a step's inputs are copied into fixed buffers
  // before its replay. While capturing, Allocate, CopyToBackend, CopyToHost, Synchronize and
  // GroupedExperts (host group table) are refused with FailedPrecondition, and so is an op that
  // would grow the backend's own workspaces: run the same shapes once without capturing first.
  // A call that fails while capturing is not recorded (the caller drops the capture).
  // FailedPrecondition: BeginCapture while capturing, EndCapture when not, Replay while
  // capturing, of another backend's graph, or of a graph captured before the backend's
  // workspaces were reallocated (capture again). Replay is asynchronous like the ops: device
  // faults show at the next Synchronize()/CopyToHost().
  virtual absl::Status BeginCapture() = 0;
  virtual absl::StatusOr<GraphPtr> EndCapture() = 0;
  virtual absl::Status Replay(const Graph& graph) = 0;

  virtual absl::Status Gemm(const GemmArgs& args) = 0;
  virtual absl::Status RmsNorm(const RmsNormArgs& args) = 0;
  virtual absl::Status Rope(const RopeArgs& args) = 0;
  virtual absl::Status Gate(const GateArgs& args) = 0;
  // out[i] = silu(gate[i]) * up[i]; out may alias gate or up.
  virtual absl::Status SiluMul(const float* gate, const float* up, int64_t n, float* out) = 0;
  // x[i] += y[i].
  virtual absl::Status Add(float* x, const float* y, int64_t n) = 0;
  virtual absl::Status Embedding(const EmbeddingArgs& args) = 0;
  virtual absl::Status GroupedExperts(const GroupedExpertsArgs& args) = 0;
  virtual absl::Status RoutedExperts(const RoutedExpertsArgs& args) = 0;
  virtual absl::Status LatentAttention(const LatentAttentionArgs& args) = 0;
  virtual absl::Status Sample(const SampleArgs& args) = 0;
  virtual absl::Status Argmax(const ArgmaxArgs& args) = 0;
  virtual absl::Status ScatterRows(const ScatterRowsArgs& args) = 0;
};
using BackendPtr = std::unique_ptr<Backend>;

// The op and dtype pairs of the full interface (what the CPU reference runs); a backend that
// implements every op for every dtype answers Supports() with this.
bool FullSupport(OpKind op, DType dtype);

// The first index of the largest of logits[0, min(vocab, size)) (0 for an empty range): the
// greedy tie rule (lowest id) of Backend::Argmax, Sample's greedy rows, the host sampler and
// the Engine's argmax outputs, so that every path picks the same token.
int32_t ArgmaxOf(absl::Span<const float> logits, int64_t vocab);

// Host-side argument checks shared by the backends (InvalidArgument naming the field).
absl::Status ValidateCopy2D(int64_t ld_dst, int64_t ld_src, int64_t rows, int64_t row_bytes);
absl::Status ValidateWeight(const WeightView& w, const char* what);
absl::Status ValidateGemm(const GemmArgs& args);
absl::Status ValidateRmsNorm(const RmsNormArgs& args);
absl::Status ValidateRope(const RopeArgs& args);
absl::Status ValidateGate(const GateArgs& args);
absl::Status ValidateEmbedding(const EmbeddingArgs& args);
absl::Status ValidateGroupedExperts(const GroupedExpertsArgs& args);
absl::Status ValidateRoutedExperts(const RoutedExpertsArgs& args);
absl::Status ValidateScatterRows(const ScatterRowsArgs& args);
absl::Status ValidateLatentAttention(const LatentAttentionArgs& args);
absl::Status ValidateSample(const SampleArgs& args);
absl::Status ValidateArgmax(const ArgmaxArgs& args);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_BACKEND_H_
