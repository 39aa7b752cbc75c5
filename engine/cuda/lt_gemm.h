#ifndef MOESERVE_ENGINE_CUDA_LT_GEMM_H_
#define MOESERVE_ENGINE_CUDA_LT_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

namespace moeserve::engine::cuda {

struct LtDescriptors;  // a shape's cuBLASLt descriptors (lt_gemm.cc)

// One row-major product through cuBLASLt: y[m, n] (f32, row stride ldy) = x[m, k] * W[n, k]^T,
// x and W both f32 (CUDA_R_32F) or both bf16 (CUDA_R_16BF), accumulated in f32 (no TF32). In
// column-major terms: y^T = op_T(W as k x n) * (x^T as k x m). Host code (g++); the handle and
// workspace are borrowed and must outlive the call. Enqueues on `stream`, never synchronises.
struct LtGemmArgs {
  cudaDataType_t type = CUDA_R_32F;  // of x and W
  const void* x = nullptr;
  int64_t m = 0;
  int64_t ldx = 0;
  const void* w = nullptr;
  int64_t n = 0;
  int64_t k = 0;
  float* y = nullptr;
  int64_t ldy = 0;
};

// The heuristic's answer and the descriptors per shape and pointer alignment, so that a repeated
// shape (every layer, every expert) asks cuBLASLt once and builds no descriptors again. One thread at a time, like the backend that owns it.
class LtGemmPlans {
 public:
  struct Plan {
    bool found = false;
    cublasLtMatmulAlgo_t algo = {};
    std::shared_ptr<LtDescriptors> descriptors;  // made once per shape, kept with the plan
  };
  // (type, m, n, k, ldx, ldy, x, w and y alignment in bytes).
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int>;

  const Plan* Find(const Key& key) const {
    auto it = plans_.find(key);
    return it == plans_.end() ? nullptr : &it->second;
  }
  void Put(const Key& key, const Plan& plan) {
    if (plans_.size() >= 65536) plans_.clear();  // bound the memory for odd shape mixes
    plans_[key] = plan;
  }

 private:
  std::map<Key, Plan> plans_;
};

// CUBLAS_STATUS_NOT_SUPPORTED when the heuristic offers no algorithm for these shapes and
// pointer alignments, or cuBLASLt declines the call (the caller then uses LaunchTiledGemm).
// `plans` may be null (ask the heuristic every time).
cublasStatus_t LtGemm(cublasLtHandle_t handle, const LtGemmArgs& args, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream, LtGemmPlans* plans = nullptr);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_LT_GEMM_H_
