#include "engine/cuda/lt_gemm.h"

namespace moeserve::engine::cuda {

// Owns the cuBLASLt descriptors of one shape.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtDescriptors() = default;
  LtDescriptors(const LtDescriptors&) = delete;
  LtDescriptors& operator=(const LtDescriptors&) = delete;
  ~LtDescriptors() {
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

namespace {

#define MOESERVE_LT_TRY(expr)                           \
  do {                                                  \
    cublasStatus_t moeserve_lt_status_ = (expr);        \
    if (moeserve_lt_status_ != CUBLAS_STATUS_SUCCESS) { \
      return moeserve_lt_status_;                       \
    }                                                   \
  } while (0)

// The largest power of two up to 256 that divides the address.
uint32_t Alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

}  // namespace

namespace {

// The descriptors of a row-major y[m, n] = x[m, k] * W[n, k]^T.
cublasStatus_t MakeDescriptors(const LtGemmArgs& args, LtDescriptors* d) {
  MOESERVE_LT_TRY(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  MOESERVE_LT_TRY(
      cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  MOESERVE_LT_TRY(
      cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  const uint64_t m = static_cast<uint64_t>(args.m), n = static_cast<uint64_t>(args.n),
                 k = static_cast<uint64_t>(args.k);
  // A: W stored column-major as k x n (ld k), transposed to n x k. B: x^T, k x m (ld ldx).
  MOESERVE_LT_TRY(cublasLtMatrixLayoutCreate(&d->a, args.type, k, n, args.k));
  MOESERVE_LT_TRY(cublasLtMatrixLayoutCreate(&d->b, args.type, k, m, args.ldx));
  MOESERVE_LT_TRY(cublasLtMatrixLayoutCreate(&d->c, CUDA_R_32F, n, m, args.ldy));
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t LtGemm(cublasLtHandle_t handle, const LtGemmArgs& args, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream, LtGemmPlans* plans) {
  if (args.m <= 0 || args.n <= 0) return CUBLAS_STATUS_SUCCESS;
  // The heuristic assumes 256-byte aligned pointers unless told otherwise; x and y are often
  // row or column slices (and expert weights sit at any offset), so give it the real alignment.
  const uint32_t align_w = Alignment(args.w), align_x = Alignment(args.x),
                 align_y = Alignment(args.y);
  const LtGemmPlans::Key key{static_cast<int>(args.type),
                             args.m,
                             args.n,
                             args.k,
                             args.ldx,
                             args.ldy,
                             static_cast<int>(align_x),
                             static_cast<int>(align_w),
                             static_cast<int>(align_y)};
  const LtGemmPlans::Plan* known = plans != nullptr ? plans->Find(key) : nullptr;
  LtGemmPlans::Plan plan;
  if (known != nullptr) {
    plan = *known;
  } else {
    plan.descriptors = std::make_shared<LtDescriptors>();
    LtDescriptors* d = plan.descriptors.get();
    MOESERVE_LT_TRY(MakeDescriptors(args, d));
    MOESERVE_LT_TRY(cublasLtMatmulPreferenceCreate(&d->pref));
    MOESERVE_LT_TRY(
        cublasLtMatmulPreferenceSetAttribute(d->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes, sizeof(workspace_bytes)));
    MOESERVE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_w, sizeof(align_w)));
    MOESERVE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_x, sizeof(align_x)));
    MOESERVE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_y, sizeof(align_y)));
    MOESERVE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_y, sizeof(align_y)));
    cublasLtMatmulHeuristicResult_t result = {};
    int found = 0;
    const cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(handle, d->op, d->a, d->b, d->c, d->c,
                                                            d->pref, 1, &result, &found);
    // NOT_SUPPORTED is the heuristic's "nothing fits"; other failures are not remembered.
    if (h != CUBLAS_STATUS_SUCCESS && h != CUBLAS_STATUS_NOT_SUPPORTED) return h;
    plan.found = h == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (plan.found) {
      plan.algo = result.algo;
    } else {
      plan.descriptors.reset();
    }
    if (plans != nullptr) plans->Put(key, plan);
  }
  if (!plan.found) return CUBLAS_STATUS_NOT_SUPPORTED;
  const LtDescriptors& d = *plan.descriptors;
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t s =
      cublasLtMatmul(handle, d.op, &alpha, args.w, d.a, args.x, d.b, &beta, args.y, d.c, args.y,
                     d.c, &plan.algo, workspace, workspace_bytes, stream);
  // An algorithm the heuristic offered but the call rejects (alignment or leading-dimension
  // rules it did not model): enqueued nothing, so let the caller's fallback run, now and later.
  if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE) {
    if (plans != nullptr) plans->Put(key, LtGemmPlans::Plan{});
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return s;
}

}  // namespace moeserve::engine::cuda
