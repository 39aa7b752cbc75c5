#ifndef MOESERVE_ENGINE_CPU_CPU_BACKEND_H_
#define MOESERVE_ENGINE_CPU_CPU_BACKEND_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "engine/backend.h"

namespace moeserve::engine::cpu {

// The reference Backend: every op runs on the calling thread (Gemm on an optional pool) before
// the call returns, over host memory (all three MemoryTypes are 64-byte aligned host memory).
// Wraps cpu::Linear, ops::RmsNorm/RopeAngles/ApplyRope/SiluMul/RouteToken and
// cpu::LatentAttention, so it computes exactly what Model::Forward computes. FP8 weights are
// dequantised to f32 (W * scale_inv) for each Gemm call: correct, not fast.
// Graphs: a capture records each validated call with its arguments; Replay makes the same calls
// again, so a replay computes what the calls would compute then (the reference for what a CUDA
// graph of the same calls must do, and a check that a captured step reads no host value that
// changes between steps). Its errors come back from Replay.
// Not thread-safe (one engine thread), like every Backend.
class CpuBackend final : public Backend {
 public:
  // threads <= 1: no pool.
  explicit CpuBackend(int threads = 1);
  ~CpuBackend() override;

  std::string name() const override { return "cpu"; }
  bool Supports(OpKind op, DType dtype) const override;

  absl::StatusOr<BufferPtr> Allocate(int64_t bytes, MemoryType type) override;
  absl::Status CopyToBackend(void* dst, const void* src, int64_t bytes) override;
  absl::Status CopyToHost(void* dst, const void* src, int64_t bytes) override;
  absl::Status CopyWithin(void* dst, const void* src, int64_t bytes) override;
  absl::Status CopyWithin2D(void* dst, int64_t ld_dst, const void* src, int64_t ld_src,
                            int64_t rows, int64_t row_bytes) override;
  absl::Status Synchronize() override { return RefuseWhileCapturing("Synchronize"); }
  absl::StatusOr<MemoryInfo> DeviceMemory() override;
  absl::Status BeginCapture() override;
  absl::StatusOr<GraphPtr> EndCapture() override;
  absl::Status Replay(const Graph& graph) override;

  absl::Status Gemm(const GemmArgs& args) override;
  absl::Status RmsNorm(const RmsNormArgs& args) override;
  absl::Status Rope(const RopeArgs& args) override;
  absl::Status Gate(const GateArgs& args) override;
  absl::Status SiluMul(const float* gate, const float* up, int64_t n, float* out) override;
  absl::Status Add(float* x, const float* y, int64_t n) override;
  absl::Status Embedding(const EmbeddingArgs& args) override;
  absl::Status GroupedExperts(const GroupedExpertsArgs& args) override;
  absl::Status RoutedExperts(const RoutedExpertsArgs& args) override;
  absl::Status ScatterRows(const ScatterRowsArgs& args) override;
  absl::Status LatentAttention(const LatentAttentionArgs& args) override;
  absl::Status Sample(const SampleArgs& args) override;
  absl::Status Argmax(const ArgmaxArgs& args) override;

 private:
  using Call = std::function<absl::Status()>;
  class CpuGraph;
  // Records `call` in the capture under way.
  absl::Status Record(Call call);
  // FailedPrecondition naming `what` while capturing.
  absl::Status RefuseWhileCapturing(const char* what) const;

  std::unique_ptr<ThreadPool> pool_;
  // The calls of the capture under way (null when not capturing).
  std::unique_ptr<std::vector<Call>> capture_;
  std::vector<float> dequant_;  // FP8 weights widened for one Gemm
  std::vector<float> scratch_;  // GroupedExperts' gate and up products
};

}  // namespace moeserve::engine::cpu

#endif  // MOESERVE_ENGINE_CPU_CPU_BACKEND_H_
