#ifndef MOESERVE_ENGINE_CUDA_SAMPLE_CUH_
#define MOESERVE_ENGINE_CUDA_SAMPLE_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moeserve::engine::cuda {

// One token per row (engine/backend.h, SampleArgs): argmax (lowest id on ties) where
// temperature is 0; otherwise e = exp((logit - max) / T), sorted descending by CUB's stable
// segmented radix sort (so equal values keep the lower id first), the shortest prefix reaching
// top_p * total kept, and the first kept token whose running sum exceeds uniform * kept sum.
// Sums are float block scans in sorted order. Needs SampleWorkspaceBytes() of device scratch.
struct SampleArgs {
  const float* logits = nullptr;
  int64_t ld = 0;
  int64_t rows = 0;
  int64_t vocab = 0;
  const float* temperature = nullptr;
  const float* top_p = nullptr;
  const float* uniform = nullptr;
  int32_t* ids = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};
// Scratch for rows x vocab (rows * vocab < 2^31). Enqueues nothing.
cudaError_t SampleWorkspaceBytes(int64_t rows, int64_t vocab, size_t* bytes);
cudaError_t LaunchSample(const SampleArgs& args, cudaStream_t stream);

// ids[r] = the argmax of row r's first vocab logits (row stride ld), lowest id on ties, as
// Sample's greedy rows pick it: one block per row, no workspace.
struct ArgmaxArgs {
  const float* logits = nullptr;
  int64_t ld = 0;
  int64_t rows = 0;
  int64_t vocab = 0;
  int32_t* ids = nullptr;
};
cudaError_t LaunchArgmax(const ArgmaxArgs& args, cudaStream_t stream);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_SAMPLE_CUH_
