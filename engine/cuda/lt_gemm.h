#ifndef MOESERVE_ENGINE_CUDA_LT_GEMM_H_
#define MOESERVE_ENGINE_CUDA_LT_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moeserve::engine::cuda {

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

// CUBLAS_STATUS_NOT_SUPPORTED when the heuristic offers no algorithm for these shapes and
// alignments (the caller then uses LaunchTiledGemm).
cublasStatus_t LtGemm(cublasLtHandle_t handle, const LtGemmArgs& args, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_LT_GEMM_H_
