#ifndef MOESERVE_ENGINE_CUDA_CUDA_BACKEND_H_
#define MOESERVE_ENGINE_CUDA_CUDA_BACKEND_H_

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace moeserve::engine::cuda {

// The CUDA Backend on device `device` (engine/backend.h for the op contracts). Host-compiled;
// the kernels sit behind the Launch* functions of the .cuh files in this folder.
//
// One non-blocking compute stream; every op validates its arguments on the host, enqueues and
// returns without synchronising (GroupedExperts too: its group table is host data). Scratch
// (bf16 activations, expert products, attention partials, sampling) grows stream-ordered
// (cudaMallocAsync).
// Gemm: BF16 products of up to 8 rows (decode) through a skinny kernel that streams each weight
// row once and takes a whole batch of heads in one launch; larger ones through cuBLASLt for F32
// (f32 compute, no TF32) and BF16 (x rounded to bf16 on the device, f32 accumulation), with the
// plan and descriptors kept per shape; FP8 E4M3 with 128x128 block scales through a tiled f32
// kernel that scales each weight as it loads it (correct, not tensor-core fast). A shape
// cuBLASLt declines falls back to the same tiled kernel. RoutedExperts: BF16 and FP8 weights
// (bf16 tensor cores); F32 weights are declined by Supports (callers then route on the host).
// Limits: Gate n_routed_experts <= 512 and n_group <= 64; LatentAttention kv_lora_rank <= 1024
// and kv_lora_rank + rope dim <= 1536; Sample rows * vocab < 2^31 (InvalidArgument beyond).
//
// Errors: Unavailable from CreateCudaBackend when the runtime reports no usable device (no
// driver, no GPU, index out of range); FailedPrecondition for a device below sm_90 (the build
// holds sm_90 code only); ResourceExhausted when device memory runs out; Internal for other
// CUDA or cuBLAS errors, naming the call. Not thread-safe (one engine thread); each call makes
// the backend's device current on the calling thread.
absl::StatusOr<BackendPtr> CreateCudaBackend(int device);

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_CUDA_BACKEND_H_
