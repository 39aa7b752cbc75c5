#include "engine/cuda/lt_gemm.h"

namespace moeserve::engine::cuda {
namespace {

// Owns the cuBLASLt descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  Descriptors() = default;
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
  ~Descriptors() {
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

#define MOESERVE_LT_TRY(expr)                           \
  do {                                                  \
    cublasStatus_t moeserve_lt_status_ = (expr);        \
    if (moeserve_lt_status_ != CUBLAS_STATUS_SUCCESS) { \
      return moeserve_lt_status_;                       \
    }                                                   \
  } while (0)

}  // namespace

cublasStatus_t LtGemm(cublasLtHandle_t handle, const LtGemmArgs& args, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream) {
  if (args.m <= 0 || args.n <= 0) return CUBLAS_STATUS_SUCCESS;
  Descriptors d;
  MOESERVE_LT_TRY(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  MOESERVE_LT_TRY(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  MOESERVE_LT_TRY(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  const uint64_t m = static_cast<uint64_t>(args.m), n = static_cast<uint64_t>(args.n),
                 k = static_cast<uint64_t>(args.k);
  // A: W stored column-major as k x n (ld k), transposed to n x k. B: x^T, k x m (ld ldx).
  MOESERVE_LT_TRY(cublasLtMatrixLayoutCreate(&d.a, args.type, k, n, args.k));
  MOESERVE_LT_TRY(cublasLtMatrixLayoutCreate(&d.b, args.type, k, m, args.ldx));
  MOESERVE_LT_TRY(cublasLtMatrixLayoutCreate(&d.c, CUDA_R_32F, n, m, args.ldy));
  MOESERVE_LT_TRY(cublasLtMatmulPreferenceCreate(&d.pref));
  MOESERVE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes)));
  cublasLtMatmulHeuristicResult_t result = {};
  int found = 0;
  MOESERVE_LT_TRY(
      cublasLtMatmulAlgoGetHeuristic(handle, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found));
  if (found == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(handle, d.op, &alpha, args.w, d.a, args.x, d.b, &beta, args.y, d.c, args.y,
                        d.c, &result.algo, workspace, workspace_bytes, stream);
}

}  // namespace moeserve::engine::cuda
