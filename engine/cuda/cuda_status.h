#ifndef MOESERVE_ENGINE_CUDA_CUDA_STATUS_H_
#define MOESERVE_ENGINE_CUDA_CUDA_STATUS_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve::engine::cuda {

// cudaError_t -> absl::Status naming `what`: ResourceExhausted for out-of-memory, Unavailable
// for a missing driver or device, Internal otherwise. Host code only.
inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat("cuda: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  switch (e) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

inline absl::Status CublasStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat("cublasLt: ", what, ": status ", static_cast<int>(s));
  if (s == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

}  // namespace moeserve::engine::cuda

// Returns the converted status from the enclosing function when a CUDA call fails.
#define MOESERVE_RETURN_IF_CUDA_ERROR(expr, what)                                              \
  do {                                                                                         \
    ::absl::Status moeserve_cuda_status_ = ::moeserve::engine::cuda::CudaStatus((expr), what); \
    if (!moeserve_cuda_status_.ok()) return moeserve_cuda_status_;                             \
  } while (0)

#define MOESERVE_RETURN_IF_CUBLAS_ERROR(expr, what)                                                \
  do {                                                                                             \
    ::absl::Status moeserve_cublas_status_ = ::moeserve::engine::cuda::CublasStatus((expr), what); \
    if (!moeserve_cublas_status_.ok()) return moeserve_cublas_status_;                             \
  } while (0)

#endif  // MOESERVE_ENGINE_CUDA_CUDA_STATUS_H_
