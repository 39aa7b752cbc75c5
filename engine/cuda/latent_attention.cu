#include <cmath>
#include <cstddef>
#include <cstdint>

#include "engine/cuda/device_util.cuh"
#include "engine/cuda/latent_attention.cuh"

namespace moeserve::engine::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 32;      // cached rows per shared tile (one per lane in the softmax)
constexpr int kMaxHeads = 16;  // heads of a group per block
constexpr int kMergeThreads = 128;

// The launch shape for one call.
struct Plan {
  int heads = 1;           // heads per block: a power of two <= kMaxHeads
  int cpt = 1;             // float4 output columns per thread (2 only for kvr > 512)
  int64_t tokens = 0;      // groups
  int64_t chunks = 0;      // blocks across one group's heads
  int64_t splits = 1;      // blocks across one group's keys
  int64_t split_keys = 0;  // keys per split, a multiple of kTile
  int64_t ldk = 0;         // lat rounded up to 4: the row stride in shared memory
  int64_t vcols = 0;       // kvr rounded up to 4: the columns a block accumulates
  size_t smem = 0;
  size_t workspace = 0;
};

struct Params {
  LatentAttentionArgs a;
  int64_t splits;
  int64_t split_keys;
  int ldk;
  int vcols;
  bool vec;         // lat % 4 == 0 and aligned rows: 4-element loads (cp.async for float32)
  float* part_acc;  // [items, splits, vcols] unnormalised accumulators (splits > 1)
  float* part_ml;   // [items, splits, 2] running max and sum (splits > 1)
};

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float Lane(const float4& v, int e) {
  return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w;
}

__device__ __forceinline__ void CpAsync16(float* smem, const float* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
}

__device__ __forceinline__ void CpAsyncWaitAll() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// Sums kSize per-lane values across the warp, scattering the sums: each halving step keeps
// half the values (which half by one lane bit) and adds the partner lane's copy of them, so
// 64 values cost 62 shuffles instead of 320. Afterwards v[j] (j < max(kSize / 32, 1)) holds the
// sum of value *first + j; with kSize < 32, lanes that differ only in their low 32 / kSize bits
// hold the same sums.
template <int kCount, int kOffset, int kSize>
__device__ __forceinline__ void ReduceScatter(float (&v)[kSize], int lane, int* first) {
  if constexpr (kOffset > 0) {
    if constexpr (kCount > 1) {
      constexpr int kHalf = kCount / 2;
      const bool upper = (lane & kOffset) != 0;
#pragma unroll
      for (int j = 0; j < kHalf; ++j) {
        const float send = upper ? v[j] : v[j + kHalf];
        const float keep = upper ? v[j + kHalf] : v[j];
        v[j] = keep + __shfl_xor_sync(0xffffffffu, send, kOffset);
      }
      if (upper) *first += kHalf;
      ReduceScatter<kHalf, kOffset / 2>(v, lane, first);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], kOffset);
      ReduceScatter<1, kOffset / 2>(v, lane, first);
    }
  }
}

// One block per (query token, chunk of kH of its heads, split of its keys); blockIdx.x counts
// tokens from the last, so that a prefill's longest rows start first. Dynamic shared memory:
// q [kH][ldk], row tile [kTile][ldk], scores then probabilities [kH][kTile], running max, sum
// and correction [kH] each.
template <int kH, int kCpt>
__global__ void __launch_bounds__(kThreads, kCpt == 1 ? 2 : 1)
    LatentAttentionKernel(const Params p) {
  static_assert(kTile == 32 && kThreads == 256, "one key per lane in the softmax");
  // Scores: warps tile [kH][kTile] as kWH heads by kWT keys; lanes split the lat dimension.
  constexpr int kWH = kH < 8 ? kH : 8;
  constexpr int kWGT = kWarps / (kH / kWH);
  constexpr int kWT = kTile / kWGT;
  constexpr int kN = kWH * kWT;
  constexpr int kOut = kN >= 32 ? kN / 32 : 1;
  constexpr int kRep = kN >= 32 ? 1 : 32 / kN;
  // Accumulation: kHG head groups by kCT threads, each kHPT heads by kCpt float4 columns.
  constexpr int kHG = kH < 2 ? 1 : 2;
  constexpr int kHPT = kH / kHG;
  constexpr int kCT = kThreads / kHG;

  extern __shared__ float4 smem4[];
  const LatentAttentionArgs& a = p.a;
  const int ldk = p.ldk;
  float* sq = reinterpret_cast<float*>(smem4);
  float* sk = sq + kH * ldk;
  float* ss = sk + kTile * ldk;
  float* smax = ss + kH * kTile;
  float* ssum = smax + kH;
  float* scorr = ssum + kH;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t token = static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x;
  const int head0 = static_cast<int>(blockIdx.y) * kH;
  const int heads = static_cast<int>(a.group - head0 < kH ? a.group - head0 : kH);
  const int64_t split = blockIdx.z;
  const int64_t item0 = token * a.group + head0;
  int64_t len = a.lens[token * a.group];
  if (len > a.max_blocks * a.block_tokens) len = a.max_blocks * a.block_tokens;
  const int64_t begin = split * p.split_keys;
  const int64_t end = len < begin + p.split_keys ? len : begin + p.split_keys;
  if (begin >= end) {  // a length below 1, or a split past the length
    if (p.splits == 1) {
      for (int h = 0; h < heads; ++h) {
        for (int64_t c = threadIdx.x; c < a.kvr; c += kThreads) {
          a.out[(item0 + h) * a.ld_out + c] = 0.0f;
        }
      }
    } else {
      // Weight 0 in the merge, which still reads the (zero) accumulator.
      for (int h = 0; h < heads; ++h) {
        float* dst = p.part_acc + ((item0 + h) * p.splits + split) * p.vcols;
        for (int c = threadIdx.x; c < p.vcols; c += kThreads) dst[c] = 0.0f;
      }
      if (static_cast<int>(threadIdx.x) < heads) {
        float* ml = p.part_ml + ((item0 + threadIdx.x) * p.splits + split) * 2;
        ml[0] = -INFINITY;
        ml[1] = 0.0f;
      }
    }
    return;
  }

  for (int h = 0; h < kH; ++h) {
    for (int d = threadIdx.x; d < ldk; d += kThreads) {
      sq[h * ldk + d] = h < heads && d < a.lat ? a.q[(item0 + h) * a.ldq + d] : 0.0f;
    }
  }
  if (threadIdx.x < kH) {
    smax[threadIdx.x] = -INFINITY;
    ssum[threadIdx.x] = 0.0f;
  }
  const int32_t* table = a.block_tables + static_cast<int64_t>(a.table_rows[token * a.group]) *
                                              a.max_blocks;

  const int hg = threadIdx.x / kCT, ct = threadIdx.x % kCT;
  bool active[kCpt];
#pragma unroll
  for (int j = 0; j < kCpt; ++j) active[j] = 4 * (ct + kCT * j) < p.vcols;
  float acc[kHPT][kCpt][4];
#pragma unroll
  for (int h = 0; h < kHPT; ++h) {
#pragma unroll
    for (int j = 0; j < kCpt; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[h][j][e] = 0.0f;
    }
  }

  for (int64_t s0 = begin; s0 < end; s0 += kTile) {
    const int n = static_cast<int>(end - s0 < kTile ? end - s0 : kTile);
    // The tile: warp w copies rows w, w + 8, ...; rows past n are zero (probability 0 times a
    // finite value in the accumulation).
    for (int r = warp; r < kTile; r += kWarps) {
      float* dst = sk + r * ldk;
      if (r < n) {
        const int64_t s = s0 + r;
        const int64_t block = table[s / a.block_tokens];
        const int64_t first =
            ((block * a.num_layers + a.layer) * a.block_tokens + s % a.block_tokens) * a.lat;
        if (a.cache_bf16) {
          // Widened to float32 on the way into shared memory (exact), 4 elements a load.
          const uint16_t* row = static_cast<const uint16_t*>(a.cache) + first;
          if (p.vec) {
            for (int c = lane * 4; c < ldk; c += 128) {
              const uint2 v = *reinterpret_cast<const uint2*>(row + c);
              *reinterpret_cast<float4*>(dst + c) =
                  make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
                              __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u));
            }
          } else {
            for (int c = lane; c < ldk; c += 32) dst[c] = c < a.lat ? Bf16Bits(row[c]) : 0.0f;
          }
        } else {
          const float* row = static_cast<const float*>(a.cache) + first;
          if (p.vec) {
            for (int c = lane * 4; c < ldk; c += 128) CpAsync16(dst + c, row + c);
          } else {
            for (int c = lane; c < ldk; c += 32) dst[c] = c < a.lat ? row[c] : 0.0f;
          }
        }
      } else {
        for (int c = lane; c < ldk; c += 32) dst[c] = 0.0f;
      }
    }
    CpAsyncWaitAll();
    __syncthreads();

    // Scores of the warp's kWH heads by kWT keys; each lane sums every 32nd float4 of lat.
    {
      const int wh = warp / kWGT, wt = warp % kWGT;
      const float* qw = sq + wh * kWH * ldk;
      const float* kw = sk + wt * kWT * ldk;
      float part[kN];
#pragma unroll
      for (int i = 0; i < kN; ++i) part[i] = 0.0f;
      for (int c = lane * 4; c < ldk; c += 128) {
        float4 kv[kWT];
#pragma unroll
        for (int t = 0; t < kWT; ++t) kv[t] = *reinterpret_cast<const float4*>(kw + t * ldk + c);
#pragma unroll
        for (int h = 0; h < kWH; ++h) {
          const float4 qv = *reinterpret_cast<const float4*>(qw + h * ldk + c);
#pragma unroll
          for (int t = 0; t < kWT; ++t) {
            float x = part[h * kWT + t];
            x = fmaf(qv.x, kv[t].x, x);
            x = fmaf(qv.y, kv[t].y, x);
            x = fmaf(qv.z, kv[t].z, x);
            part[h * kWT + t] = fmaf(qv.w, kv[t].w, x);
          }
        }
      }
      int first = 0;
      ReduceScatter<kN, 16>(part, lane, &first);
      if (lane % kRep == 0) {
#pragma unroll
        for (int j = 0; j < kOut; ++j) {
          const int e = first + j;
          const int key = wt * kWT + e % kWT;
          ss[(wh * kWH + e / kWT) * kTile + key] = key < n ? part[j] * a.scale : -INFINITY;
        }
      }
    }
    __syncthreads();

    // Online softmax, one warp per head and one key per lane; the tile has a key below n, so
    // the new max is finite.
    for (int h = warp; h < kH; h += kWarps) {
      const float s = ss[h * kTile + lane];
      const float m_old = smax[h];
      const float m_new = fmaxf(m_old, WarpMax(s));
      const float e = s == -INFINITY ? 0.0f : expf(s - m_new);
      ss[h * kTile + lane] = e;
      const float sum = WarpSum(e);
      if (lane == 0) {
        const float correction = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
        scorr[h] = correction;
        ssum[h] = ssum[h] * correction + sum;
        smax[h] = m_new;
      }
    }
    __syncthreads();

    // acc[h][c] = acc[h][c] * correction[h] + sum_t p[h][t] * row_t[c], four keys a step.
    {
#pragma unroll
      for (int h = 0; h < kHPT; ++h) {
        const float correction = scorr[hg * kHPT + h];
#pragma unroll
        for (int j = 0; j < kCpt; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[h][j][e] *= correction;
        }
      }
      const int n4 = (n + 3) / 4;
      for (int t4 = 0; t4 < n4; ++t4) {
        float4 pr[kHPT];
#pragma unroll
        for (int h = 0; h < kHPT; ++h) {
          pr[h] = *reinterpret_cast<const float4*>(ss + (hg * kHPT + h) * kTile + 4 * t4);
        }
#pragma unroll
        for (int j = 0; j < kCpt; ++j) {
          if (!active[j]) continue;
          const float* v = sk + 4 * t4 * ldk + 4 * (ct + kCT * j);
          const float4 v0 = *reinterpret_cast<const float4*>(v);
          const float4 v1 = *reinterpret_cast<const float4*>(v + ldk);
          const float4 v2 = *reinterpret_cast<const float4*>(v + 2 * ldk);
          const float4 v3 = *reinterpret_cast<const float4*>(v + 3 * ldk);
#pragma unroll
          for (int h = 0; h < kHPT; ++h) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              float x = fmaf(pr[h].x, Lane(v0, e), acc[h][j][e]);
              x = fmaf(pr[h].y, Lane(v1, e), x);
              x = fmaf(pr[h].z, Lane(v2, e), x);
              acc[h][j][e] = fmaf(pr[h].w, Lane(v3, e), x);
            }
          }
        }
      }
    }
    __syncthreads();  // the next tile overwrites sk and ss
  }

#pragma unroll
  for (int h = 0; h < kHPT; ++h) {
    const int head = hg * kHPT + h;
    if (head >= heads) continue;
    const int64_t item = item0 + head;
    if (p.splits == 1) {
      const float inv = 1.0f / ssum[head];
      float* out = a.out + item * a.ld_out;
#pragma unroll
      for (int j = 0; j < kCpt; ++j) {
        const int col = 4 * (ct + kCT * j);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (col + e < a.kvr) out[col + e] = acc[h][j][e] * inv;
        }
      }
    } else {
      float* dst = p.part_acc + (item * p.splits + split) * p.vcols;
#pragma unroll
      for (int j = 0; j < kCpt; ++j) {
        if (!active[j]) continue;
        *reinterpret_cast<float4*>(dst + 4 * (ct + kCT * j)) =
            make_float4(acc[h][j][0], acc[h][j][1], acc[h][j][2], acc[h][j][3]);
      }
    }
  }
  if (p.splits > 1 && static_cast<int>(threadIdx.x) < heads) {
    float* ml = p.part_ml + ((item0 + threadIdx.x) * p.splits + split) * 2;
    ml[0] = smax[threadIdx.x];
    ml[1] = ssum[threadIdx.x];
  }
}

// Block (item, 32 float4 columns): out = sum_s w_s acc_s / sum_s w_s sum_s with w_s =
// exp(max_s - max); the four warps take every fourth split. Splits without keys (sum 0, max
// -inf, accumulator 0) weigh 0; an item with none at all (length below 1) gets zeros. Dynamic
// shared memory: the weights [splits].
__global__ void __launch_bounds__(kMergeThreads) MergeSplitsKernel(const Params p) {
  constexpr int kMergeWarps = kMergeThreads / 32;
  extern __shared__ float weight[];
  __shared__ float reduce[kMergeWarps];
  __shared__ float4 part[kMergeWarps][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t item = blockIdx.x;
  const int64_t splits = p.splits;
  const float* ml = p.part_ml + item * splits * 2;
  float mx = -INFINITY;
  for (int64_t s = threadIdx.x; s < splits; s += kMergeThreads) {
    if (ml[2 * s + 1] > 0.0f) mx = fmaxf(mx, ml[2 * s]);
  }
  mx = WarpMax(mx);
  if (lane == 0) reduce[warp] = mx;
  __syncthreads();
  mx = reduce[0];
  for (int w = 1; w < kMergeWarps; ++w) mx = fmaxf(mx, reduce[w]);
  __syncthreads();
  float total = 0.0f;
  for (int64_t s = threadIdx.x; s < splits; s += kMergeThreads) {
    const float w = ml[2 * s + 1] > 0.0f ? expf(ml[2 * s] - mx) : 0.0f;
    weight[s] = w;
    total += w * ml[2 * s + 1];
  }
  total = WarpSum(total);
  if (lane == 0) reduce[warp] = total;
  __syncthreads();
  total = 0.0f;
  for (int w = 0; w < kMergeWarps; ++w) total += reduce[w];

  const int col = 4 * (static_cast<int>(blockIdx.y) * 32 + lane);
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (col < p.vcols) {
    const float* acc = p.part_acc + item * splits * p.vcols + col;
#pragma unroll 4
    for (int64_t s = warp; s < splits; s += kMergeWarps) {
      const float4 x = *reinterpret_cast<const float4*>(acc + s * p.vcols);
      const float w = weight[s];
      v.x = fmaf(w, x.x, v.x);
      v.y = fmaf(w, x.y, v.y);
      v.z = fmaf(w, x.z, v.z);
      v.w = fmaf(w, x.w, v.w);
    }
  }
  part[warp][lane] = v;
  __syncthreads();
  if (warp != 0 || col >= p.a.kvr) return;
  for (int w = 1; w < kMergeWarps; ++w) {
    v.x += part[w][lane].x;
    v.y += part[w][lane].y;
    v.z += part[w][lane].z;
    v.w += part[w][lane].w;
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  float* out = p.a.out + item * p.a.ld_out + col;
  if (col + 4 <= p.a.kvr) {
    out[0] = v.x * inv;
    out[1] = v.y * inv;
    out[2] = v.z * inv;
    out[3] = v.w * inv;
  } else {  // kvr % 4 != 0: the last columns
    const float r[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (col + e < p.a.kvr) out[e] = r[e] * inv;
    }
  }
}

size_t SharedBytes(int heads, int64_t ldk) {
  return sizeof(float) * static_cast<size_t>((heads + kTile) * ldk + heads * kTile + 3 * heads);
}

cudaError_t MakePlan(const LatentAttentionArgs& a, Plan* plan) {
  if (a.items < 0 || a.group < 1 || a.items % a.group != 0 || a.kvr < 1 || a.lat < a.kvr ||
      a.kvr > kAttentionMaxKvr || a.lat > kAttentionMaxLat || a.max_blocks < 1 ||
      a.block_tokens < 1) {
    return cudaErrorInvalidValue;
  }
  int device = 0, sms = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) {
    e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (e != cudaSuccess) return e;
  Plan p;
  p.ldk = (a.lat + 3) / 4 * 4;
  p.vcols = (a.kvr + 3) / 4 * 4;
  p.tokens = a.items / a.group;
  const int64_t target = 2 * static_cast<int64_t>(sms);  // blocks that fill the device
  while (p.heads < kMaxHeads && p.heads < a.group) p.heads *= 2;
  // Fewer tokens than multiprocessors (decode): half the heads per block, twice the blocks.
  if (p.heads == kMaxHeads && p.tokens * ((a.group + p.heads - 1) / p.heads) < sms) p.heads /= 2;
  while (p.heads > 1 && SharedBytes(p.heads, p.ldk) > static_cast<size_t>(optin)) p.heads /= 2;
  p.smem = SharedBytes(p.heads, p.ldk);
  if (p.smem > static_cast<size_t>(optin)) return cudaErrorInvalidValue;
  p.cpt = p.heads > 1 && p.vcols > 2 * kThreads ? 2 : 1;
  p.chunks = (a.group + p.heads - 1) / p.heads;
  if (p.chunks > 65535) return cudaErrorInvalidValue;
  // Split the keys (a tile at least per split) until the grid reaches the target.
  const int64_t tiles = (a.max_blocks * a.block_tokens + kTile - 1) / kTile;
  const int64_t blocks = p.tokens * p.chunks;
  int64_t splits = 1;
  if (blocks > 0 && blocks < target) {
    splits = (target + blocks - 1) / blocks;
    if (splits > tiles) splits = tiles;
  }
  const int64_t split_tiles = (tiles + splits - 1) / splits;
  p.splits = (tiles + split_tiles - 1) / split_tiles;
  p.split_keys = split_tiles * kTile;
  p.workspace = p.splits > 1 ? sizeof(float) * static_cast<size_t>(a.items * p.splits) *
                                   static_cast<size_t>(p.vcols + 2)
                             : 0;
  *plan = p;
  return cudaSuccess;
}

template <int kH, int kCpt>
cudaError_t Launch(const Plan& plan, const Params& p, cudaStream_t stream) {
  auto* kernel = &LatentAttentionKernel<kH, kCpt>;
  if (plan.smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(plan.smem));
    // Two blocks of DeepSeek's latent (113 KB each) per multiprocessor.
    if (e == cudaSuccess) {
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                               cudaSharedmemCarveoutMaxShared);
    }
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(plan.tokens), static_cast<unsigned>(plan.chunks),
                  static_cast<unsigned>(plan.splits));
  kernel<<<grid, kThreads, plan.smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LatentAttentionWorkspaceBytes(const LatentAttentionArgs& a, size_t* bytes) {
  *bytes = 0;
  if (a.items == 0) return cudaSuccess;
  Plan plan;
  cudaError_t e = MakePlan(a, &plan);
  if (e != cudaSuccess) return e;
  *bytes = plan.workspace;
  return cudaSuccess;
}

cudaError_t LaunchLatentAttention(const LatentAttentionArgs& a, cudaStream_t stream) {
  if (a.items <= 0) return cudaSuccess;
  Plan plan;
  cudaError_t e = MakePlan(a, &plan);
  if (e != cudaSuccess) return e;
  if (a.workspace_bytes < plan.workspace || (plan.workspace > 0 && a.workspace == nullptr)) {
    return cudaErrorInvalidValue;
  }
  Params p;
  p.a = a;
  p.splits = plan.splits;
  p.split_keys = plan.split_keys;
  p.ldk = static_cast<int>(plan.ldk);
  p.vcols = static_cast<int>(plan.vcols);
  // Whole rows of 4-element loads: 16 bytes for float32 (cp.async), 8 for bf16.
  p.vec = a.lat % 4 == 0 && reinterpret_cast<uintptr_t>(a.cache) % (a.cache_bf16 ? 8 : 16) == 0;
  p.part_acc = static_cast<float*>(a.workspace);
  p.part_ml = plan.splits > 1 ? p.part_acc + a.items * plan.splits * plan.vcols : nullptr;
  switch (plan.heads * 10 + plan.cpt) {
    case 161:
      e = Launch<16, 1>(plan, p, stream);
      break;
    case 162:
      e = Launch<16, 2>(plan, p, stream);
      break;
    case 81:
      e = Launch<8, 1>(plan, p, stream);
      break;
    case 82:
      e = Launch<8, 2>(plan, p, stream);
      break;
    case 41:
      e = Launch<4, 1>(plan, p, stream);
      break;
    case 42:
      e = Launch<4, 2>(plan, p, stream);
      break;
    case 21:
      e = Launch<2, 1>(plan, p, stream);
      break;
    case 22:
      e = Launch<2, 2>(plan, p, stream);
      break;
    default:
      e = Launch<1, 1>(plan, p, stream);
      break;
  }
  if (e != cudaSuccess || plan.splits == 1) return e;
  const dim3 merge_grid(static_cast<unsigned>(a.items),
                        static_cast<unsigned>((plan.vcols / 4 + 31) / 32));
  MergeSplitsKernel<<<merge_grid, kMergeThreads, sizeof(float) * static_cast<size_t>(plan.splits),
                      stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeserve::engine::cuda
