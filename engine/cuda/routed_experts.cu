#include <cuda_bf16.h>
#include <mma.h>

#include "engine/cuda/routed_experts.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr int kTileM = 64;  // rows of one expert per tile
constexpr int kTileN = 64;
constexpr int kTileK = 64;
constexpr int kLds = kTileK + 8;  // bf16 row stride of the shared tiles (16-byte multiple)
constexpr int kWarps = 4;         // 2 x 2 warps, 32 x 32 outputs each
constexpr int kRouteThreads = 1024;

struct Tile {
  int expert;
  int row0;  // first of the expert's rows in the sorted layout
  int rows;  // <= kTileM
  int pad;
};

// The scratch pieces, each 256-byte aligned.
struct Layout {
  int32_t* offsets;      // [n_experts + 1]
  int32_t* num_tiles;    // [1]
  int32_t* row_of_slot;  // [slots], -1 for a slot with a bad id
  int32_t* sorted_slot;  // [slots]: the slot of each sorted row
  Tile* tiles;           // [MaxTiles]
  float* h;              // [slots, inter]
  float* y;              // [slots, hidden]
};

int64_t MaxTiles(int64_t slots, int64_t n_experts) {
  return (slots + kTileM - 1) / kTileM + (slots < n_experts ? slots : n_experts);
}

size_t Align(size_t v) { return (v + 255) / 256 * 256; }

Layout MakeLayout(void* base, int64_t slots, int64_t n_experts, int64_t hidden, int64_t inter) {
  char* p = static_cast<char*>(base);
  Layout l;
  auto take = [&p](size_t bytes) {
    char* at = p;
    p += Align(bytes);
    return at;
  };
  l.offsets = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * (n_experts + 1)));
  l.num_tiles = reinterpret_cast<int32_t*>(take(sizeof(int32_t)));
  l.row_of_slot = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * slots));
  l.sorted_slot = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * slots));
  l.tiles = reinterpret_cast<Tile*>(take(sizeof(Tile) * MaxTiles(slots, n_experts)));
  l.h = reinterpret_cast<float*>(take(sizeof(float) * slots * inter));
  l.y = reinterpret_cast<float*>(take(sizeof(float) * slots * hidden));
  return l;
}

// One block: counts per expert (shared atomics give each slot its rank within its expert; the
// order within an expert does not change any row's result), offsets, the tile list and the
// slot <-> row maps.
__global__ void __launch_bounds__(kRouteThreads)
    RouteKernel(const int32_t* ids, int64_t slots, int64_t n_experts, Layout l) {
  extern __shared__ int32_t counts[];  // [n_experts + 1]
  for (int64_t e = threadIdx.x; e <= n_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
    const int32_t e = ids[s];
    l.row_of_slot[s] = (e >= 0 && e < n_experts) ? atomicAdd(&counts[e], 1) : -1;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t start = 0, tiles = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int32_t c = counts[e];
      l.offsets[e] = start;
      for (int32_t m = 0; m < c; m += kTileM) {
        l.tiles[tiles++] = Tile{static_cast<int>(e), start + m, c - m < kTileM ? c - m : kTileM, 0};
      }
      counts[e] = start;  // now the expert's first row
      start += c;
    }
    l.offsets[n_experts] = start;
    *l.num_tiles = tiles;
  }
  __syncthreads();
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
    const int32_t rank = l.row_of_slot[s];
    if (rank < 0) continue;
    const int32_t row = counts[ids[s]] + rank;
    l.row_of_slot[s] = row;
    l.sorted_slot[row] = static_cast<int32_t>(s);
  }
}

struct GemmParams {
  const float* a = nullptr;  // activations: x (gate/up, rows through sorted_slot / topk) or h
  int64_t lda = 0;
  int64_t kdim = 0;  // reduction length
  int64_t ndim = 0;  // outputs per row
  const int32_t* sorted_slot = nullptr;
  int64_t topk = 1;
  const Tile* tiles = nullptr;
  const int32_t* num_tiles = nullptr;
  const ExpertPointers* experts = nullptr;
  float* out = nullptr;  // [rows, ndim]
};

template <WeightType kType>
__device__ __forceinline__ void LoadWeightTile(__nv_bfloat16 (*bs)[kLds], const void* data,
                                               const float* scale, int64_t n0, int64_t k0,
                                               int64_t ndim, int64_t kdim) {
  if (kType == WeightType::kBf16 && kdim % 8 == 0) {
    const uint16_t* w = static_cast<const uint16_t*>(data);
    for (int i = threadIdx.x; i < kTileN * kTileK / 8; i += blockDim.x) {
      const int r = i / (kTileK / 8), c = (i % (kTileK / 8)) * 8;
      const int64_t n = n0 + r, k = k0 + c;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (n < ndim && k < kdim) v = *reinterpret_cast<const uint4*>(w + n * kdim + k);
      *reinterpret_cast<uint4*>(&bs[r][c]) = v;
    }
    return;
  }
  DeviceWeight dw;
  dw.type = kType;
  dw.data = data;
  dw.scale_inv = scale;
  dw.n = ndim;
  dw.k = kdim;
  for (int i = threadIdx.x; i < kTileN * kTileK; i += blockDim.x) {
    const int r = i / kTileK, c = i % kTileK;
    const int64_t n = n0 + r, k = k0 + c;
    const float v = (n < ndim && k < kdim) ? LoadWeight<kType>(dw, n, k) : 0.0f;
    bs[r][c] = __float2bfloat16_rn(v);
  }
}

// kGateUp: out = silu(x W_gate^T) * (x W_up^T) over the tile's rows of x; else out = h W_down^T.
template <WeightType kType, bool kGateUp>
__global__ void __launch_bounds__(kWarps * 32) ExpertGemmKernel(GemmParams p) {
  using namespace nvcuda;
  constexpr int kMats = kGateUp ? 2 : 1;
  if (static_cast<int>(blockIdx.y) >= *p.num_tiles) return;
  const Tile tile = p.tiles[blockIdx.y];
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  __shared__ __align__(32) __nv_bfloat16 as[kTileM][kLds];
  __shared__ __align__(32) __nv_bfloat16 bs[kMats][kTileN][kLds];
  __shared__ __align__(32) float stage[kWarps][kMats][16 * 16];
  __shared__ int64_t src_row[kTileM];
  for (int r = threadIdx.x; r < kTileM; r += blockDim.x) {
    int64_t row = -1;
    if (r < tile.rows) {
      row = kGateUp ? p.sorted_slot[tile.row0 + r] / p.topk : tile.row0 + r;
    }
    src_row[r] = row;
  }
  const ExpertPointers ex = p.experts[tile.expert];
  const void* wdata[2] = {kGateUp ? ex.gate : ex.down, ex.up};
  const float* wscale[2] = {kGateUp ? ex.gate_scale : ex.down_scale, ex.up_scale};
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 2, wn = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMats][2][2];
#pragma unroll
  for (int m = 0; m < kMats; ++m) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[m][i][j], 0.0f);
    }
  }
  __syncthreads();
  for (int64_t k0 = 0; k0 < p.kdim; k0 += kTileK) {
    for (int i = threadIdx.x; i < kTileM * kTileK; i += blockDim.x) {
      const int r = i / kTileK, c = i % kTileK;
      const int64_t k = k0 + c;
      const float v = (src_row[r] >= 0 && k < p.kdim) ? p.a[src_row[r] * p.lda + k] : 0.0f;
      as[r][c] = __float2bfloat16_rn(v);
    }
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
      LoadWeightTile<kType>(bs[m], wdata[m], wscale[m], n0, k0, p.ndim, p.kdim);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &as[wm * 32 + i * 16][kk], kLds);
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
          wmma::load_matrix_sync(fb, &bs[m][wn * 32 + j * 16][kk], kLds);
#pragma unroll
          for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[m][i][j], fa[i], fb, acc[m][i][j]);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
        wmma::store_matrix_sync(stage[warp][m], acc[m][i][j], 16, wmma::mem_row_major);
      }
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int r = wm * 32 + i * 16 + e / 16;
        const int64_t n = n0 + wn * 32 + j * 16 + e % 16;
        if (r >= tile.rows || n >= p.ndim) continue;
        float v = stage[warp][0][e];
        if constexpr (kGateUp) v = v / (1.0f + expf(-v)) * stage[warp][kMats - 1][e];
        p.out[static_cast<int64_t>(tile.row0 + r) * p.ndim + n] = v;
      }
      __syncwarp();
    }
  }
}

__global__ void CombineKernel(const float* y, const int32_t* row_of_slot, const float* weights,
                              int64_t k, int64_t hidden, float* out) {
  const int64_t t = blockIdx.x;
  for (int64_t d = threadIdx.x; d < hidden; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t row = row_of_slot[t * k + j];
      if (row >= 0) acc += weights[t * k + j] * y[static_cast<int64_t>(row) * hidden + d];
    }
    out[t * hidden + d] = acc;
  }
}

template <WeightType kType>
cudaError_t LaunchGemms(const RoutedExpertsArgs& a, const Layout& l, int64_t max_tiles,
                        cudaStream_t stream) {
  GemmParams p;
  p.sorted_slot = l.sorted_slot;
  p.topk = a.k;
  p.tiles = l.tiles;
  p.num_tiles = l.num_tiles;
  p.experts = a.experts;
  p.a = a.x;
  p.lda = a.hidden;
  p.kdim = a.hidden;
  p.ndim = a.inter;
  p.out = l.h;
  ExpertGemmKernel<kType, true>
      <<<dim3(GridFor(a.inter, kTileN), static_cast<unsigned>(max_tiles)), kWarps * 32, 0,
         stream>>>(p);
  p.a = l.h;
  p.lda = a.inter;
  p.kdim = a.inter;
  p.ndim = a.hidden;
  p.out = l.y;
  ExpertGemmKernel<kType, false>
      <<<dim3(GridFor(a.hidden, kTileN), static_cast<unsigned>(max_tiles)), kWarps * 32, 0,
         stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

size_t RoutedExpertsScratchBytes(int64_t slots, int64_t n_experts, int64_t hidden, int64_t inter) {
  return Align(sizeof(int32_t) * (n_experts + 1)) + Align(sizeof(int32_t)) +
         2 * Align(sizeof(int32_t) * slots) + Align(sizeof(Tile) * MaxTiles(slots, n_experts)) +
         Align(sizeof(float) * slots * inter) + Align(sizeof(float) * slots * hidden);
}

cudaError_t LaunchRoutedExperts(const RoutedExpertsArgs& a, cudaStream_t stream) {
  if (a.n <= 0 || a.k <= 0) return cudaSuccess;
  if (a.type == WeightType::kF32) return cudaErrorInvalidValue;
  const int64_t slots = a.n * a.k;
  const Layout l = MakeLayout(a.scratch, slots, a.n_experts, a.hidden, a.inter);
  const size_t route_smem = sizeof(int32_t) * static_cast<size_t>(a.n_experts + 1);
  if (route_smem > 48 * 1024) return cudaErrorInvalidValue;
  RouteKernel<<<1, kRouteThreads, route_smem, stream>>>(a.ids, slots, a.n_experts, l);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const int64_t max_tiles = MaxTiles(slots, a.n_experts);
  e = a.type == WeightType::kBf16 ? LaunchGemms<WeightType::kBf16>(a, l, max_tiles, stream)
                                  : LaunchGemms<WeightType::kF8E4M3>(a, l, max_tiles, stream);
  if (e != cudaSuccess) return e;
  CombineKernel<<<static_cast<unsigned>(a.n), 256, 0, stream>>>(l.y, l.row_of_slot, a.weights,
                                                                 a.k, a.hidden, a.out);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
