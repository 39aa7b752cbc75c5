// cuBLASLt opened with dlopen at first use instead of linked at start-up.
//
// Why: libcublasLt.so.13 has 92 KB of thread-local storage. A library linked at start-up puts
// its TLS into every thread's static TLS block, carved from the thread's stack, and civetweb
// (the Prometheus /metrics endpoint of every service) creates its threads with 100 KB stacks:
// pthread_create failed with the library linked, so a worker could not serve /metrics. Opened
// with dlopen, the library's TLS (general-dynamic model) is allocated per thread on first use
// instead. These definitions stand in for the library's symbols: each looks its function up once
// and forwards; without the library every call answers CUBLAS_STATUS_NOT_INITIALIZED, which the
// backend reports as an error.
#include <cublasLt.h>
#include <dlfcn.h>

namespace {

void* Library() {
  static void* const handle = [] {
    void* h = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_LOCAL);
    return h != nullptr ? h : dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
  }();
  return handle;
}

void* Symbol(const char* name) {
  void* h = Library();
  return h != nullptr ? dlsym(h, name) : nullptr;
}

}  // namespace

#define MOESERVE_LT_FORWARD(name, params, args)                                \
  cublasStatus_t CUBLASWINAPI name params {                                    \
    static const auto fn = reinterpret_cast<decltype(&name)>(Symbol(#name));   \
    return fn != nullptr ? fn args : CUBLAS_STATUS_NOT_INITIALIZED;            \
  }

extern "C" {

MOESERVE_LT_FORWARD(cublasLtCreate, (cublasLtHandle_t * handle), (handle))
MOESERVE_LT_FORWARD(cublasLtDestroy, (cublasLtHandle_t handle), (handle))
MOESERVE_LT_FORWARD(cublasLtMatmul,
                    (cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                     const void* a, cublasLtMatrixLayout_t a_desc, const void* b,
                     cublasLtMatrixLayout_t b_desc, const void* beta, const void* c,
                     cublasLtMatrixLayout_t c_desc, void* d, cublasLtMatrixLayout_t d_desc,
                     const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream),
                    (handle, desc, alpha, a, a_desc, b, b_desc, beta, c, c_desc, d, d_desc, algo,
                     workspace, workspace_bytes, stream))
MOESERVE_LT_FORWARD(cublasLtMatmulAlgoGetHeuristic,
                    (cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                     cublasLtMatrixLayout_t a_desc, cublasLtMatrixLayout_t b_desc,
                     cublasLtMatrixLayout_t c_desc, cublasLtMatrixLayout_t d_desc,
                     cublasLtMatmulPreference_t pref, int requested,
                     cublasLtMatmulHeuristicResult_t results[], int* returned),
                    (handle, desc, a_desc, b_desc, c_desc, d_desc, pref, requested, results,
                     returned))
MOESERVE_LT_FORWARD(cublasLtMatmulDescCreate,
                    (cublasLtMatmulDesc_t * desc, cublasComputeType_t compute,
                     cudaDataType_t scale),
                    (desc, compute, scale))
MOESERVE_LT_FORWARD(cublasLtMatmulDescDestroy, (cublasLtMatmulDesc_t desc), (desc))
MOESERVE_LT_FORWARD(cublasLtMatmulDescSetAttribute,
                    (cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                     const void* buf, size_t bytes),
                    (desc, attr, buf, bytes))
MOESERVE_LT_FORWARD(cublasLtMatmulPreferenceCreate, (cublasLtMatmulPreference_t * pref), (pref))
MOESERVE_LT_FORWARD(cublasLtMatmulPreferenceDestroy, (cublasLtMatmulPreference_t pref), (pref))
MOESERVE_LT_FORWARD(cublasLtMatmulPreferenceSetAttribute,
                    (cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
                     const void* buf, size_t bytes),
                    (pref, attr, buf, bytes))
MOESERVE_LT_FORWARD(cublasLtMatrixLayoutCreate,
                    (cublasLtMatrixLayout_t * layout, cudaDataType type, uint64_t rows,
                     uint64_t cols, int64_t ld),
                    (layout, type, rows, cols, ld))
MOESERVE_LT_FORWARD(cublasLtMatrixLayoutDestroy, (cublasLtMatrixLayout_t layout), (layout))

}  // extern "C"
