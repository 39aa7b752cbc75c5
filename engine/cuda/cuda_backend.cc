#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/cuda/cuda_status.h"
#include "engine/cuda/elementwise.cuh"
#include "engine/cuda/gate.cuh"
#include "engine/cuda/gemm.cuh"
#include "engine/cuda/latent_attention.cuh"
#include "engine/cuda/lt_gemm.h"
#include "engine/cuda/op_profile.h"
#include "engine/cuda/rms_norm.cuh"
#include "engine/cuda/rope.cuh"
#include "engine/cuda/routed_experts.cuh"
#include "engine/cuda/sample.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;

class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(void* data, int64_t bytes, MemoryType type)
      : data_(data), bytes_(bytes), type_(type) {}
  ~CudaBuffer() override {
    if (data_ == nullptr) return;
    // Errors here cannot be returned; a failed free only leaks.
    switch (type_) {
      case MemoryType::kDevice:
        cudaFree(data_);
        break;
      case MemoryType::kPinned:
        cudaFreeHost(data_);
        break;
      case MemoryType::kHost:
        std::free(data_);
        break;
    }
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;

  void* data() const override { return data_; }
  int64_t bytes() const override { return bytes_; }
  MemoryType type() const override { return type_; }

 private:
  void* data_;
  int64_t bytes_;
  MemoryType type_;
};

// Device scratch that only grows, stream-ordered so that no growth waits for the host. A graph
// holds its address, so it does not grow while one is captured.
class Scratch {
 public:
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  absl::Status Reserve(size_t bytes, cudaStream_t stream, bool capturing) {
    if (bytes <= bytes_) return absl::OkStatus();
    if (capturing) {
      return absl::FailedPreconditionError(
          "a workspace would grow while capturing a graph: run the same shapes once first");
    }
    const size_t grow = std::max(bytes, bytes_ + bytes_ / 2);
    if (ptr_ != nullptr) MOESERVE_RETURN_IF_CUDA_ERROR(cudaFreeAsync(ptr_, stream), "free scratch");
    ptr_ = nullptr;
    bytes_ = 0;
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaMallocAsync(&ptr_, grow, stream), "grow scratch");
    bytes_ = grow;
    return absl::OkStatus();
  }
  void Release(cudaStream_t stream) {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream);
    ptr_ = nullptr;
    bytes_ = 0;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

WeightType ToWeightType(DType dtype) {
  switch (dtype) {
    case DType::kBf16:
      return WeightType::kBf16;
    case DType::kF8E4M3:
      return WeightType::kF8E4M3;
    case DType::kF32:
    case DType::kF16:  // rejected by ValidateWeight before this is reached
      break;
  }
  return WeightType::kF32;
}

DeviceWeight ToDevice(const WeightView& w) {
  DeviceWeight d;
  d.type = ToWeightType(w.dtype);
  d.data = w.data;
  d.scale_inv = w.scale_inv;
  d.n = w.rows;
  d.k = w.cols;
  return d;
}

// The scratch addresses a graph's kernels were given.
using WorkspaceAddresses = std::array<const void*, 5>;

class CudaGraph final : public Graph {
 public:
  CudaGraph(const void* owner, cudaGraphExec_t exec, const WorkspaceAddresses& workspaces)
      : owner_(owner), exec_(exec), workspaces_(workspaces) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  const void* owner() const { return owner_; }
  cudaGraphExec_t exec() const { return exec_; }
  const WorkspaceAddresses& workspaces() const { return workspaces_; }

 private:
  const void* owner_;
  cudaGraphExec_t exec_;
  WorkspaceAddresses workspaces_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, cudaStream_t stream, cublasLtHandle_t lt, void* lt_workspace)
      : device_(device), stream_(stream), lt_(lt), lt_workspace_(lt_workspace) {}
  ~CudaBackend() override {
    cudaSetDevice(device_);
    x_bf16_.Release(stream_);
    experts_.Release(stream_);
    routed_.Release(stream_);
    sample_.Release(stream_);
    attn_.Release(stream_);
    cudaStreamSynchronize(stream_);
    if (profile_.on()) {
      profile_.Collect();
      std::fputs(profile_.Report().c_str(), stderr);
    }
    cublasLtDestroy(lt_);
    cudaFree(lt_workspace_);
    cudaStreamDestroy(stream_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }

  // RoutedExperts' kernels use bf16 tensor cores: f32 weights (f32 compute, for exact checks)
  // take GroupedExperts with the routing on the host instead.
  bool Supports(OpKind op, DType dtype) const override {
    if (op == OpKind::kRoutedExperts && dtype == DType::kF32) return false;
    return FullSupport(op, dtype);
  }

  absl::StatusOr<BufferPtr> Allocate(int64_t bytes, MemoryType type) override {
    if (bytes < 0) return absl::InvalidArgumentError("Allocate: bytes < 0");
    MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("Allocate"));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    void* data = nullptr;
    const size_t size = static_cast<size_t>(std::max<int64_t>(bytes, 1));
    cudaError_t e = cudaSuccess;
    switch (type) {
      case MemoryType::kDevice:
        e = cudaMalloc(&data, size);
        break;
      case MemoryType::kPinned:
        e = cudaMallocHost(&data, size);
        break;
      case MemoryType::kHost:
        data = std::aligned_alloc(64, (size + 63) / 64 * 64);
        if (data == nullptr) {
          return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
        }
        break;
    }
    if (e != cudaSuccess) {
      // Not sticky, but left as the runtime's last error it would fail the next launch check.
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(
          type == MemoryType::kDevice ? "cudaMalloc" : "cudaMallocHost", " of ", bytes,
          " bytes: ", cudaGetErrorString(e)));
    }
    return BufferPtr(new CudaBuffer(data, bytes, type));
  }

  absl::Status CopyToBackend(void* dst, const void* src, int64_t bytes) override {
    MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("CopyToBackend"));
    OpProfile::Scope scope(&profile_, "CopyToBackend", stream_);
    return Copy(dst, src, bytes, "copy to device");
  }
  absl::Status CopyToHost(void* dst, const void* src, int64_t bytes) override {
    MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("CopyToHost"));
    OpProfile::Scope scope(&profile_, "CopyToHost (waits)", stream_);
    MOESERVE_RETURN_IF_ERROR(Copy(dst, src, bytes, "copy to host"));
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "wait for copy to host");
    profile_.Collect();
    return absl::OkStatus();
  }
  absl::Status CopyWithin(void* dst, const void* src, int64_t bytes) override {
    OpProfile::Scope scope(&profile_, "CopyWithin", stream_);
    return Copy(dst, src, bytes, "copy within device");
  }
  absl::Status CopyWithin2D(void* dst, int64_t ld_dst, const void* src, int64_t ld_src,
                            int64_t rows, int64_t row_bytes) override {
    OpProfile::Scope scope(&profile_, "CopyWithin2D", stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateCopy2D(ld_dst, ld_src, rows, row_bytes));
    if (rows == 0 || row_bytes == 0) return absl::OkStatus();
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    MOESERVE_RETURN_IF_CUDA_ERROR(
        cudaMemcpy2DAsync(dst, static_cast<size_t>(ld_dst), src, static_cast<size_t>(ld_src),
                          static_cast<size_t>(row_bytes), static_cast<size_t>(rows),
                          cudaMemcpyDefault, stream_),
        "2-D copy within device");
    return absl::OkStatus();
  }
  absl::Status Synchronize() override {
    MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("Synchronize"));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "synchronize");
    profile_.Collect();
    return absl::OkStatus();
  }
  absl::StatusOr<engine::MemoryInfo> DeviceMemory() override {
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    size_t free_bytes = 0, total_bytes = 0;
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    return engine::MemoryInfo{static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
  }

  // Stream capture in this thread's mode: a stray synchronising call elsewhere in the thread
  // fails instead of breaking the capture. Profiling pauses while capturing (events are not
  // kernels); a replay is timed as one op.
  absl::Status BeginCapture() override {
    MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("BeginCapture"));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                                  "begin graph capture");
    capturing_ = true;
    profile_.Pause(true);
    return absl::OkStatus();
  }
  absl::StatusOr<GraphPtr> EndCapture() override {
    if (!capturing_) return absl::FailedPreconditionError("EndCapture without a capture");
    capturing_ = false;
    profile_.Pause(false);
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    cudaGraph_t graph = nullptr;
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaStreamEndCapture(stream_, &graph), "end graph capture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    MOESERVE_RETURN_IF_CUDA_ERROR(e, "instantiate graph");
    return GraphPtr(new CudaGraph(this, exec, Workspaces()));
  }
  absl::Status Replay(const Graph& graph) override {
    MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("Replay"));
    const CudaGraph* g = dynamic_cast<const CudaGraph*>(&graph);
    if (g == nullptr || g->owner() != this) {
      return absl::FailedPreconditionError("Replay of a graph another backend captured");
    }
    if (g->workspaces() != Workspaces()) {
      return absl::FailedPreconditionError(
          "Replay of a graph whose workspaces have been reallocated: capture it again");
    }
    OpProfile::Scope scope(&profile_, "Replay (graph)", stream_);
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaGraphLaunch(g->exec(), stream_), "launch graph");
    return absl::OkStatus();
  }

  absl::Status Gemm(const GemmArgs& a) override {
    OpProfile::Scope scope(&profile_,
                           a.w.dtype == DType::kBf16 && a.m <= kSkinnyMaxM ? "Gemm (skinny)"
                           : a.w.dtype == DType::kF8E4M3                   ? "Gemm (FP8 tiled)"
                                                                           : "Gemm (cuBLASLt)",
                           stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateGemm(a));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    return RunGemm(a);
  }

  absl::Status RmsNorm(const engine::RmsNormArgs& a) override {
    OpProfile::Scope scope(&profile_, "RmsNorm", stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateRmsNorm(a));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    cuda::RmsNormArgs d{a.x, a.ldx, a.w, a.out, a.ld_out, a.rows, a.dim, a.eps};
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchRmsNorm(d, stream_), "RmsNorm");
    return absl::OkStatus();
  }

  absl::Status Rope(const engine::RopeArgs& a) override {
    OpProfile::Scope scope(&profile_, "Rope", stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateRope(a));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    cuda::RopeArgs d{a.x,        a.rows,  a.ld, a.offset, a.dim, a.positions, a.rows_per_position,
                     a.inv_freq, a.mscale};
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchRope(d, stream_), "Rope");
    return absl::OkStatus();
  }

  absl::Status Gate(const engine::GateArgs& a) override {
    OpProfile::Scope scope(&profile_, "Gate", stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateGate(a));
    const GateConfig& c = a.config;
    if (c.n_routed_experts > kGateMaxExperts || c.n_group > kGateMaxGroups) {
      return absl::InvalidArgumentError(absl::StrCat("Gate: cuda handles at most ", kGateMaxExperts,
                                                     " experts and ", kGateMaxGroups, " groups"));
    }
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    cuda::GateArgs d;
    d.logits = a.logits;
    d.bias = a.bias;
    d.tokens = a.tokens;
    d.experts = static_cast<int>(c.n_routed_experts);
    d.top_k = static_cast<int>(c.num_experts_per_tok);
    d.n_group = static_cast<int>(c.n_group);
    d.topk_group = static_cast<int>(c.topk_group);
    d.sigmoid = c.scoring_func == ScoringFunc::kSigmoid;
    d.method = MethodCode(c.topk_method);
    d.norm_topk_prob = c.norm_topk_prob;
    d.routed_scaling_factor = c.routed_scaling_factor;
    d.ids = a.ids;
    d.weights = a.weights;
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchGate(d, stream_), "Gate");
    return absl::OkStatus();
  }

  absl::Status SiluMul(const float* gate, const float* up, int64_t n, float* out) override {
    OpProfile::Scope scope(&profile_, "SiluMul", stream_);
    if (n < 0) return absl::InvalidArgumentError("SiluMul: n < 0");
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchSiluMul({gate, up, n, out}, stream_), "SiluMul");
    return absl::OkStatus();
  }

  absl::Status Add(float* x, const float* y, int64_t n) override {
    OpProfile::Scope scope(&profile_, "Add", stream_);
    if (n < 0) return absl::InvalidArgumentError("Add: n < 0");
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchAdd({x, y, n}, stream_), "Add");
    return absl::OkStatus();
  }

  absl::Status Embedding(const engine::EmbeddingArgs& a) override {
    OpProfile::Scope scope(&profile_, "Embedding", stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateEmbedding(a));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    cuda::EmbeddingArgs d{a.table, ToWeightType(a.dtype), a.vocab, a.dim, a.ids, a.rows, a.out};
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchEmbedding(d, stream_), "Embedding");
    return absl::OkStatus();
  }

  absl::Status ScatterRows(const engine::ScatterRowsArgs& a) override {
    OpProfile::Scope scope(&profile_, "ScatterRows", stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateScatterRows(a));
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    cuda::ScatterRowsArgs d{a.src, a.ld_src, a.n, a.width, a.rows,
                            a.dst, a.ld_dst, a.dst_dtype == DType::kBf16};
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchScatterRows(d, stream_), "ScatterRows");
    return absl::OkStatus();
  }

  absl::Status GroupedExperts(const GroupedExpertsArgs& a) override;
  absl::Status RoutedExperts(const engine::RoutedExpertsArgs& a) override;
  absl::Status LatentAttention(const engine::LatentAttentionArgs& a) override;
  absl::Status Sample(const engine::SampleArgs& a) override;
  absl::Status Argmax(const engine::ArgmaxArgs& a) override {
    OpProfile::Scope scope(&profile_, "Argmax", stream_);
    MOESERVE_RETURN_IF_ERROR(ValidateArgmax(a));
    if (a.rows == 0) return absl::OkStatus();
    if (a.vocab >= (int64_t{1} << 31)) {
      return absl::InvalidArgumentError("Argmax: vocab must stay below 2^31 on cuda");
    }
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    cuda::ArgmaxArgs d{a.logits, a.ld, a.rows, a.vocab, a.ids};
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchArgmax(d, stream_), "Argmax");
    return absl::OkStatus();
  }

 private:
  static int MethodCode(TopkMethod m) {
    switch (m) {
      case TopkMethod::kGreedy:
        return 0;
      case TopkMethod::kGroupLimitedGreedy:
        return 1;
      case TopkMethod::kNoauxTc:
        return 2;
    }
    return 0;
  }

  absl::Status MakeCurrent() {
    MOESERVE_RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "cudaSetDevice");
    return absl::OkStatus();
  }

  absl::Status Copy(void* dst, const void* src, int64_t bytes, const char* what) {
    if (bytes < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": bytes < 0"));
    if (bytes == 0) return absl::OkStatus();
    MOESERVE_RETURN_IF_ERROR(MakeCurrent());
    MOESERVE_RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDefault, stream_), what);
    return absl::OkStatus();
  }

  absl::Status RefuseWhileCapturing(const char* what) const {
    if (!capturing_) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(what, " while capturing a graph"));
  }
  WorkspaceAddresses Workspaces() const {
    return {x_bf16_.data(), experts_.data(), routed_.data(), sample_.data(), attn_.data()};
  }

  absl::Status RunGemm(const GemmArgs& a);

  int device_;
  cudaStream_t stream_;
  cublasLtHandle_t lt_;
  void* lt_workspace_;
  LtGemmPlans lt_plans_;
  Scratch x_bf16_;   // Gemm's activations rounded to bf16
  Scratch experts_;  // GroupedExperts' gate and up products
  Scratch routed_;   // RoutedExperts' routing tables and products
  Scratch sample_;   // Sample's sort buffers
  OpProfile profile_;  // MOESERVE_CUDA_PROFILE
  Scratch attn_;     // LatentAttention's split partials
  bool capturing_ = false;
};

absl::Status CudaBackend::RunGemm(const GemmArgs& a) {
  if (a.m == 0) return absl::OkStatus();
  if (a.w.dtype == DType::kBf16 && a.m <= kSkinnyMaxM) {
    SkinnyGemmArgs d;
    d.x = a.x;
    d.m = a.m;
    d.ldx = a.ldx;
    d.stride_x = a.stride_x;
    d.w = static_cast<const uint16_t*>(a.w.data);
    d.n = a.w.rows;
    d.k = a.w.cols;
    d.stride_w = a.stride_w;
    d.y = a.y;
    d.ldy = a.ldy;
    d.stride_y = a.stride_y;
    d.batch = a.batch;
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchSkinnyGemm(d, stream_), "Gemm (skinny)");
    return absl::OkStatus();
  }
  if (a.batch > 1) {
    const int64_t elem = a.w.dtype == DType::kF32 ? 4 : 2;  // batch > 1: kF32 or kBf16
    for (int64_t i = 0; i < a.batch; ++i) {
      GemmArgs one{a.x + i * a.stride_x, a.m, a.ldx, a.w, a.y + i * a.stride_y, a.ldy};
      one.w.data = static_cast<const char*>(a.w.data) + i * a.stride_w * elem;
      MOESERVE_RETURN_IF_ERROR(RunGemm(one));
    }
    return absl::OkStatus();
  }
  cublasStatus_t lt = CUBLAS_STATUS_NOT_SUPPORTED;
  if (a.w.dtype == DType::kF32) {
    lt = LtGemm(lt_, {CUDA_R_32F, a.x, a.m, a.ldx, a.w.data, a.w.rows, a.w.cols, a.y, a.ldy},
                lt_workspace_, kLtWorkspaceBytes, stream_, &lt_plans_);
  } else if (a.w.dtype == DType::kBf16) {
    MOESERVE_RETURN_IF_ERROR(
        x_bf16_.Reserve(static_cast<size_t>(a.m * a.w.cols) * sizeof(uint16_t), stream_, capturing_));
    uint16_t* xb = static_cast<uint16_t*>(x_bf16_.data());
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchF32ToBf16({a.x, a.m, a.w.cols, a.ldx, xb}, stream_),
                                  "Gemm: round x to bf16");
    lt = LtGemm(lt_, {CUDA_R_16BF, xb, a.m, a.w.cols, a.w.data, a.w.rows, a.w.cols, a.y, a.ldy},
                lt_workspace_, kLtWorkspaceBytes, stream_, &lt_plans_);
  }
  if (lt == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  if (lt != CUBLAS_STATUS_NOT_SUPPORTED) return CublasStatus(lt, "Gemm");
  // FP8, or a shape cuBLASLt declined.
  MOESERVE_RETURN_IF_CUDA_ERROR(
      LaunchTiledGemm({a.x, a.m, a.ldx, ToDevice(a.w), a.y, a.ldy}, stream_), "Gemm (tiled)");
  return absl::OkStatus();
}

absl::Status CudaBackend::GroupedExperts(const GroupedExpertsArgs& a) {
  OpProfile::Scope scope(&profile_, "GroupedExperts", stream_);
  MOESERVE_RETURN_IF_ERROR(ValidateGroupedExperts(a));
  MOESERVE_RETURN_IF_ERROR(RefuseWhileCapturing("GroupedExperts (a host group table)"));
  MOESERVE_RETURN_IF_ERROR(MakeCurrent());
  size_t most = 0;
  for (const ExpertGroup& g : a.groups) {
    most = std::max(most, static_cast<size_t>(2 * g.count * g.gate.rows) * sizeof(float));
  }
  if (most == 0) return absl::OkStatus();
  MOESERVE_RETURN_IF_ERROR(experts_.Reserve(most, stream_, capturing_));
  for (const ExpertGroup& g : a.groups) {
    if (g.count == 0) continue;
    const int64_t inter = g.gate.rows;
    float* gate = static_cast<float*>(experts_.data());
    float* up = gate + g.count * inter;
    const float* x = a.x + g.offset * a.hidden;
    MOESERVE_RETURN_IF_ERROR(RunGemm({x, g.count, a.hidden, g.gate, gate, inter}));
    MOESERVE_RETURN_IF_ERROR(RunGemm({x, g.count, a.hidden, g.up, up, inter}));
    MOESERVE_RETURN_IF_CUDA_ERROR(LaunchSiluMul({gate, up, g.count * inter, gate}, stream_),
                                  "GroupedExperts: SiluMul");
    MOESERVE_RETURN_IF_ERROR(
        RunGemm({gate, g.count, inter, g.down, a.out + g.offset * a.hidden, a.hidden}));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::RoutedExperts(const engine::RoutedExpertsArgs& a) {
  OpProfile::Scope scope(&profile_, "RoutedExperts", stream_);
  MOESERVE_RETURN_IF_ERROR(ValidateRoutedExperts(a));
  if (a.n == 0 || a.k == 0) return absl::OkStatus();
  if (!Supports(OpKind::kRoutedExperts, a.dtype)) {
    return absl::InvalidArgumentError("RoutedExperts: cuda runs BF16 and F8_E4M3 weights");
  }
  MOESERVE_RETURN_IF_ERROR(MakeCurrent());
  MOESERVE_RETURN_IF_ERROR(routed_.Reserve(
      RoutedExpertsScratchBytes(a.n * a.k, a.n_experts, a.hidden, a.inter), stream_, capturing_));
  static_assert(sizeof(cuda::ExpertPointers) == sizeof(engine::ExpertWeightPointers));
  cuda::RoutedExpertsArgs d;
  d.x = a.x;
  d.n = a.n;
  d.k = a.k;
  d.hidden = a.hidden;
  d.inter = a.inter;
  d.n_experts = a.n_experts;
  d.type = ToWeightType(a.dtype);
  d.experts = reinterpret_cast<const cuda::ExpertPointers*>(a.experts);
  d.ids = a.ids;
  d.weights = a.weights;
  d.out = a.out;
  d.scratch = routed_.data();
  MOESERVE_RETURN_IF_CUDA_ERROR(LaunchRoutedExperts(d, stream_), "RoutedExperts");
  return absl::OkStatus();
}

absl::Status CudaBackend::LatentAttention(const engine::LatentAttentionArgs& a) {
  OpProfile::Scope scope(&profile_, "LatentAttention", stream_);
  MOESERVE_RETURN_IF_ERROR(ValidateLatentAttention(a));
  if (a.kvr > kAttentionMaxKvr || a.lat > kAttentionMaxLat) {
    return absl::InvalidArgumentError(
        absl::StrCat("LatentAttention: cuda handles kv_lora_rank up to ", kAttentionMaxKvr,
                     " and lat up to ", kAttentionMaxLat));
  }
  MOESERVE_RETURN_IF_ERROR(MakeCurrent());
  cuda::LatentAttentionArgs d;
  d.q = a.q;
  d.ldq = a.ldq;
  d.items = a.items;
  d.group = a.group;
  d.table_rows = a.table_rows;
  d.lens = a.lens;
  d.block_tables = a.block_tables;
  d.max_blocks = a.max_blocks;
  d.cache = a.cache;
  d.cache_bf16 = a.cache_dtype == DType::kBf16;
  d.num_layers = a.num_layers;
  d.layer = a.layer;
  d.block_tokens = a.block_tokens;
  d.lat = a.lat;
  d.kvr = a.kvr;
  d.scale = a.scale;
  d.out = a.out;
  d.ld_out = a.ld_out;
  size_t bytes = 0;
  MOESERVE_RETURN_IF_CUDA_ERROR(LatentAttentionWorkspaceBytes(d, &bytes),
                                "LatentAttention: workspace size");
  if (bytes > 0) {
    MOESERVE_RETURN_IF_ERROR(attn_.Reserve(bytes, stream_, capturing_));
    d.workspace = attn_.data();
    d.workspace_bytes = attn_.bytes();
  }
  MOESERVE_RETURN_IF_CUDA_ERROR(LaunchLatentAttention(d, stream_), "LatentAttention");
  return absl::OkStatus();
}

absl::Status CudaBackend::Sample(const engine::SampleArgs& a) {
  OpProfile::Scope scope(&profile_, "Sample", stream_);
  MOESERVE_RETURN_IF_ERROR(ValidateSample(a));
  if (a.rows == 0) return absl::OkStatus();
  if (a.rows * a.vocab >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError("Sample: rows * vocab must stay below 2^31 on cuda");
  }
  MOESERVE_RETURN_IF_ERROR(MakeCurrent());
  size_t bytes = 0;
  MOESERVE_RETURN_IF_CUDA_ERROR(SampleWorkspaceBytes(a.rows, a.vocab, &bytes),
                                "Sample: workspace size");
  MOESERVE_RETURN_IF_ERROR(sample_.Reserve(bytes, stream_, capturing_));
  cuda::SampleArgs d;
  d.logits = a.logits;
  d.ld = a.ld;
  d.rows = a.rows;
  d.vocab = a.vocab;
  d.temperature = a.temperature;
  d.top_p = a.top_p;
  d.uniform = a.uniform;
  d.ids = a.ids;
  d.workspace = sample_.data();
  d.workspace_bytes = sample_.bytes();
  MOESERVE_RETURN_IF_CUDA_ERROR(LaunchSample(d, stream_), "Sample");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BackendPtr> CreateCudaBackend(int device) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error for later callers
    return absl::UnavailableError(absl::StrCat("backend 'cuda': no usable CUDA device (",
                                               cudaGetErrorName(e), ": ", cudaGetErrorString(e),
                                               ")"));
  }
  if (device < 0 || device >= count) {
    return absl::UnavailableError(
        absl::StrCat("backend 'cuda': device ", device, " requested, ", count, " present"));
  }
  int major = 0;
  MOESERVE_RETURN_IF_CUDA_ERROR(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
      "compute capability");
  if (major < 9) {
    return absl::FailedPreconditionError(absl::StrCat("backend 'cuda': device ", device, " is sm_",
                                                      major, "x; this build has sm_90 code only"));
  }
  MOESERVE_RETURN_IF_CUDA_ERROR(cudaSetDevice(device), "cudaSetDevice");
  cudaStream_t stream = nullptr;
  MOESERVE_RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                "create stream");
  cublasLtHandle_t lt = nullptr;
  if (absl::Status s = CublasStatus(cublasLtCreate(&lt), "create handle"); !s.ok()) {
    cudaStreamDestroy(stream);
    return s;
  }
  void* workspace = nullptr;
  if (absl::Status s = CudaStatus(cudaMalloc(&workspace, kLtWorkspaceBytes), "Lt workspace");
      !s.ok()) {
    cublasLtDestroy(lt);
    cudaStreamDestroy(stream);
    return s;
  }
  return BackendPtr(new CudaBackend(device, stream, lt, workspace));
}

}  // namespace moeserve::engine::cuda
