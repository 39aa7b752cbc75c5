#include <climits>
#include <cmath>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "engine/cuda/device_util.cuh"
#include "engine/cuda/sample.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr int kThreads = 1024;

size_t AlignUp(size_t v) { return (v + 255) / 256 * 256; }

// The workspace: e values and ids (sort input and output), segment offsets, CUB's scratch.
struct Layout {
  float* keys_in;
  float* keys_out;
  int32_t* ids_in;
  int32_t* ids_out;
  int32_t* offsets;
  void* cub;
  size_t cub_bytes;
  size_t total;
};

Layout MakeLayout(void* base, int64_t rows, int64_t vocab, size_t cub_bytes) {
  const size_t n = static_cast<size_t>(rows * vocab);
  char* p = static_cast<char*>(base);
  Layout l;
  size_t off = 0;
  l.keys_in = reinterpret_cast<float*>(p + off);
  off += AlignUp(n * sizeof(float));
  l.keys_out = reinterpret_cast<float*>(p + off);
  off += AlignUp(n * sizeof(float));
  l.ids_in = reinterpret_cast<int32_t*>(p + off);
  off += AlignUp(n * sizeof(int32_t));
  l.ids_out = reinterpret_cast<int32_t*>(p + off);
  off += AlignUp(n * sizeof(int32_t));
  l.offsets = reinterpret_cast<int32_t*>(p + off);
  off += AlignUp(static_cast<size_t>(rows + 1) * sizeof(int32_t));
  l.cub = p + off;
  l.cub_bytes = cub_bytes;
  l.total = off + cub_bytes;
  return l;
}

cudaError_t CubBytes(int64_t rows, int64_t vocab, size_t* bytes) {
  *bytes = 0;
  return cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, *bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(rows * vocab), static_cast<int>(rows), static_cast<const int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr));
}

// A candidate for a row's argmax: larger value wins, then the lower id.
struct Best {
  float value;
  int id;
};

__device__ __forceinline__ Best Better(const Best& x, const Best& y) {
  return (y.value > x.value || (y.value == x.value && y.id < x.id)) ? y : x;
}

// The argmax of logits[0, vocab) (lowest id on ties), for thread 0 of a kThreads block; every
// thread of the block must call it.
__device__ int BlockArgmax(const float* logits, int64_t vocab) {
  using Reduce = cub::BlockReduce<Best, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  Best best{-INFINITY, INT_MAX};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    best = Better(best, Best{logits[i], static_cast<int>(i)});
  }
  return Reduce(temp).Reduce(best, [](const Best& x, const Best& y) { return Better(x, y); }).id;
}

// Argmax (greedy rows write their id) and, for sampled rows, e = exp((l - max) / T) with ids.
__global__ void __launch_bounds__(kThreads) PrepareKernel(SampleArgs a, Layout w) {
  __shared__ int best_shared;
  const int64_t r = blockIdx.x;
  const float* logits = a.logits + r * a.ld;
  const int winner = BlockArgmax(logits, a.vocab);
  if (threadIdx.x == 0) {
    best_shared = winner;
    w.offsets[r] = static_cast<int32_t>(r * a.vocab);
    if (r == a.rows - 1) w.offsets[a.rows] = static_cast<int32_t>(a.rows * a.vocab);
  }
  __syncthreads();
  const float t = a.temperature[r];
  if (t == 0.0f && threadIdx.x == 0) a.ids[r] = best_shared;
  const float mx = logits[best_shared];
  for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) {
    w.keys_in[r * a.vocab + i] = t == 0.0f ? 0.0f : expf((logits[i] - mx) / t);
    w.ids_in[r * a.vocab + i] = static_cast<int32_t>(i);
  }
}

// First index i < limit of the sorted row whose running sum passes `threshold` (>= when
// inclusive, else >); limit when none does. *sum_at gets the running sum there (or at the end).
__device__ int64_t FirstPast(const float* e, int64_t limit, float threshold, bool inclusive,
                             float* sum_at) {
  using Scan = cub::BlockScan<float, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  __shared__ float carry;
  __shared__ int found;
  __shared__ float found_sum;
  if (threadIdx.x == 0) {
    carry = 0.0f;
    found = INT_MAX;
  }
  __syncthreads();
  for (int64_t base = 0; base < limit; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    float v = i < limit ? e[i] : 0.0f;
    float run;
    Scan(temp).InclusiveSum(v, run);
    run += carry;
    const bool past = inclusive ? run >= threshold : run > threshold;
    if (i < limit && past) atomicMin(&found, static_cast<int>(i));
    __syncthreads();
    if (i == found) found_sum = run;
    if (threadIdx.x == kThreads - 1) carry = run;
    __syncthreads();
    if (found != INT_MAX) break;
  }
  __syncthreads();
  const int64_t result = found != INT_MAX ? found : limit;
  *sum_at = found != INT_MAX ? found_sum : carry;
  __syncthreads();
  return result;
}

__global__ void __launch_bounds__(kThreads) DrawKernel(SampleArgs a, Layout w) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ float total_shared;
  const int64_t r = blockIdx.x;
  if (a.temperature[r] == 0.0f) return;
  const float* e = w.keys_out + r * a.vocab;
  const int32_t* ids = w.ids_out + r * a.vocab;
  float part = 0.0f;
  for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) part += e[i];
  const float total = Reduce(temp).Sum(part);
  if (threadIdx.x == 0) total_shared = total;
  __syncthreads();
  float kept_sum;
  int64_t kept = FirstPast(e, a.vocab, a.top_p[r] * total_shared, true, &kept_sum);
  kept = kept < a.vocab ? kept + 1 : a.vocab;
  float unused;
  const int64_t j = FirstPast(e, kept, a.uniform[r] * kept_sum, false, &unused);
  if (threadIdx.x == 0) a.ids[r] = ids[j < kept ? j : kept - 1];
}

__global__ void __launch_bounds__(kThreads) ArgmaxKernel(ArgmaxArgs a) {
  const int64_t r = blockIdx.x;
  const int best = BlockArgmax(a.logits + r * a.ld, a.vocab);
  if (threadIdx.x == 0) a.ids[r] = best;
}

}  // namespace

cudaError_t SampleWorkspaceBytes(int64_t rows, int64_t vocab, size_t* bytes) {
  size_t cub_bytes = 0;
  cudaError_t e = CubBytes(rows, vocab, &cub_bytes);
  if (e != cudaSuccess) return e;
  *bytes = MakeLayout(nullptr, rows, vocab, cub_bytes).total;
  return cudaSuccess;
}

cudaError_t LaunchSample(const SampleArgs& a, cudaStream_t stream) {
  if (a.rows <= 0) return cudaSuccess;
  size_t cub_bytes = 0;
  cudaError_t e = CubBytes(a.rows, a.vocab, &cub_bytes);
  if (e != cudaSuccess) return e;
  const Layout w = MakeLayout(a.workspace, a.rows, a.vocab, cub_bytes);
  if (w.total > a.workspace_bytes) return cudaErrorInvalidValue;
  const unsigned rows = static_cast<unsigned>(a.rows);
  PrepareKernel<<<rows, kThreads, 0, stream>>>(a, w);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  size_t bytes = w.cub_bytes;
  e = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      w.cub, bytes, w.keys_in, w.keys_out, w.ids_in, w.ids_out, static_cast<int>(a.rows * a.vocab),
      static_cast<int>(a.rows), w.offsets, w.offsets + 1, 0, 32, stream);
  if (e != cudaSuccess) return e;
  DrawKernel<<<rows, kThreads, 0, stream>>>(a, w);
  return cudaGetLastError();
}

cudaError_t LaunchArgmax(const ArgmaxArgs& a, cudaStream_t stream) {
  if (a.rows <= 0) return cudaSuccess;
  ArgmaxKernel<<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
