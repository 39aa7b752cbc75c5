// AVX-512 body of LatentAttention: one float32 lane per query (two vectors of 16 a tile), so a
// score needs no horizontal reduction (the transposed queries meet each key row's elements as
// broadcasts, one broadcast for both vectors), the softmax runs down the lanes, and the output
// accumulates 4 queries x 64 values per pass over the keys.

#include "engine/cpu/attention_kernels.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "engine/cpu/exp_avx512.h"

// See linear_avx512.cc: GCC 12's intrinsics trip -Wmaybe-uninitialized when inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define MOESERVE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

namespace moeserve::engine::cpu::internal {
namespace {

constexpr int kL = kAttentionLanes;
static_assert(kL == 32, "two zmm of float32 lanes");

MOESERVE_AVX512 inline const float* RowAt(const LatentAttentionTile& t, int64_t s) {
  return t.blocks[s / t.block_tokens] + (s % t.block_tokens) * t.lat;
}

// scores[s * 32 + i] = scale * <q_i, row_s> for s < max_len and the first 16 NVQ lanes, 8 keys
// per pass (8 NVQ independent FMA chains keep both FMA pipes busy); each key element broadcast
// serves NVQ vectors of queries.
template <int NVQ>
MOESERVE_AVX512 void Scores(const LatentAttentionTile& t, int64_t max_len, float* scores) {
  constexpr int kKeys = 8;
  const __m512 scale = _mm512_set1_ps(t.scale);
  int64_t s = 0;
  for (; s + kKeys <= max_len; s += kKeys) {
    const float* r[kKeys];
    __m512 a[kKeys][NVQ];
    for (int k = 0; k < kKeys; ++k) {
      r[k] = RowAt(t, s + k);
      for (int v = 0; v < NVQ; ++v) a[k][v] = _mm512_setzero_ps();
    }
    for (int64_t d = 0; d < t.lat; ++d) {
      __m512 q[NVQ];
#pragma GCC unroll 2
      for (int v = 0; v < NVQ; ++v) q[v] = _mm512_loadu_ps(t.qt + d * kL + v * 16);
#pragma GCC unroll 8
      for (int k = 0; k < kKeys; ++k) {
        const __m512 key = _mm512_set1_ps(r[k][d]);
#pragma GCC unroll 2
        for (int v = 0; v < NVQ; ++v) a[k][v] = _mm512_fmadd_ps(q[v], key, a[k][v]);
      }
    }
    for (int k = 0; k < kKeys; ++k) {
      for (int v = 0; v < NVQ; ++v) {
        _mm512_storeu_ps(scores + (s + k) * kL + v * 16, _mm512_mul_ps(a[k][v], scale));
      }
    }
  }
  for (; s < max_len; ++s) {
    const float* r = RowAt(t, s);
    __m512 a[NVQ];
    for (int v = 0; v < NVQ; ++v) a[v] = _mm512_setzero_ps();
    for (int64_t d = 0; d < t.lat; ++d) {
      const __m512 key = _mm512_set1_ps(r[d]);
      for (int v = 0; v < NVQ; ++v) {
        a[v] = _mm512_fmadd_ps(_mm512_loadu_ps(t.qt + d * kL + v * 16), key, a[v]);
      }
    }
    for (int v = 0; v < NVQ; ++v) {
      _mm512_storeu_ps(scores + s * kL + v * 16, _mm512_mul_ps(a[v], scale));
    }
  }
}

// Keys per pass of Accumulate: their slices of 64 values (16 KiB) stay in L1 while every group of
// queries runs over them; one pass per group over all keys read them from L2 each time.
constexpr int64_t kKeyChunk = 64;

// acc[q][v] (queries q0..q0+NQ, NQ <= 4; values [c0, c0 + 16 NV) masked to `cmask` per 16) +=
// sum over s in [s0, s1) of p[s][q] * row_s, in increasing s: the same chain of multiply-adds
// whichever chunks the keys come in. p is zero past a query's length, so every query runs over
// all keys. NQ and NV are template arguments so the NQ x NV accumulators stay in registers.
template <int NQ, int NV>
MOESERVE_AVX512 void Accumulate(const LatentAttentionTile& t, const float* p, int64_t s0,
                                int64_t s1, int q0, int64_t c0, const __mmask16* cmask,
                                __m512* acc) {
  __m512 a[NQ][NV];
#pragma GCC unroll 4
  for (int q = 0; q < NQ; ++q) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) a[q][v] = acc[q * 4 + v];
  }
  // Block by block: RowAt's division per key cost as much as the key's multiply-adds.
  for (int64_t b0 = s0; b0 < s1;) {
    const int64_t end = std::min(s1, (b0 / t.block_tokens + 1) * t.block_tokens);
    const float* row = RowAt(t, b0) + c0;
    for (int64_t s = b0; s < end; ++s, row += t.lat) {
      __m512 r[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) r[v] = _mm512_maskz_loadu_ps(cmask[v], row + v * 16);
#pragma GCC unroll 4
      for (int q = 0; q < NQ; ++q) {
        const __m512 w = _mm512_set1_ps(p[s * kL + q0 + q]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) a[q][v] = _mm512_fmadd_ps(w, r[v], a[q][v]);
      }
    }
    b0 = end;
  }
  for (int q = 0; q < NQ; ++q) {
    for (int v = 0; v < NV; ++v) acc[q * 4 + v] = a[q][v];
  }
}

template <int NV>
MOESERVE_AVX512 void AccumulateQueries(const LatentAttentionTile& t, const float* p, int64_t s0,
                                       int64_t s1, int q0, int nq, int64_t c0,
                                       const __mmask16* cmask, __m512* acc) {
  switch (nq) {
    case 4: Accumulate<4, NV>(t, p, s0, s1, q0, c0, cmask, acc); break;
    case 3: Accumulate<3, NV>(t, p, s0, s1, q0, c0, cmask, acc); break;
    case 2: Accumulate<2, NV>(t, p, s0, s1, q0, c0, cmask, acc); break;
    default: Accumulate<1, NV>(t, p, s0, s1, q0, c0, cmask, acc); break;
  }
}

MOESERVE_AVX512 void LatentAttentionAvx512(const LatentAttentionTile& t,
                                           std::vector<float>* scratch) {
  alignas(64) int32_t len32[kL] = {0};
  int64_t max_len = 0;
  for (int i = 0; i < t.nq; ++i) {
    max_len = std::max(max_len, t.len[i]);
    len32[i] = static_cast<int32_t>(t.len[i]);
  }
  scratch->resize(static_cast<size_t>(max_len) * kL + kL);
  float* scores = scratch->data();
  // Lanes past nq are never read: a tile of at most 16 queries scores one vector of them.
  const int nvq = t.nq > 16 ? 2 : 1;
  if (nvq == 2) {
    Scores<2>(t, max_len, scores);
  } else {
    Scores<1>(t, max_len, scores);
  }

  // Softmax numerators down the lanes; positions at or past a query's length become exact zeros.
  alignas(64) float inv[kL];
  for (int v = 0; v < nvq; ++v) {
    const __m512i lens = _mm512_load_si512(len32 + v * 16);
    float* sv = scores + v * 16;
    __m512 mx = _mm512_set1_ps(-__builtin_inff());
    for (int64_t s = 0; s < max_len; ++s) {
      const __mmask16 live =
          _mm512_cmpgt_epi32_mask(lens, _mm512_set1_epi32(static_cast<int32_t>(s)));
      mx = _mm512_mask_max_ps(mx, live, mx, _mm512_loadu_ps(sv + s * kL));
    }
    __m512 sum = _mm512_setzero_ps();
    for (int64_t s = 0; s < max_len; ++s) {
      const __mmask16 live =
          _mm512_cmpgt_epi32_mask(lens, _mm512_set1_epi32(static_cast<int32_t>(s)));
      const __m512 e =
          _mm512_maskz_mov_ps(live, Exp16(_mm512_sub_ps(_mm512_loadu_ps(sv + s * kL), mx)));
      _mm512_storeu_ps(sv + s * kL, e);
      sum = _mm512_add_ps(sum, e);
    }
    _mm512_store_ps(inv + v * 16, _mm512_div_ps(_mm512_set1_ps(1.0f), sum));
  }

  for (int64_t c0 = 0; c0 < t.kvr; c0 += 64) {
    const int64_t width = std::min<int64_t>(64, t.kvr - c0);
    const int nv = static_cast<int>((width + 15) / 16);
    __mmask16 cmask[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t left = width - v * 16;
      cmask[v] = left >= 16 ? static_cast<__mmask16>(0xffff)
                 : left > 0 ? static_cast<__mmask16>((1u << left) - 1)
                            : static_cast<__mmask16>(0);
    }
    // Accumulators of every query (4 vectors each), kept in memory between chunks of keys.
    __m512 acc[kL * 4];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    for (int64_t s0 = 0; s0 < max_len; s0 += kKeyChunk) {
      const int64_t s1 = std::min(max_len, s0 + kKeyChunk);
      for (int q0 = 0; q0 < t.nq; q0 += 4) {
        const int nq = std::min(4, t.nq - q0);
        __m512* a = acc + q0 * 4;
        switch (nv) {
          case 4: AccumulateQueries<4>(t, scores, s0, s1, q0, nq, c0, cmask, a); break;
          case 3: AccumulateQueries<3>(t, scores, s0, s1, q0, nq, c0, cmask, a); break;
          case 2: AccumulateQueries<2>(t, scores, s0, s1, q0, nq, c0, cmask, a); break;
          default: AccumulateQueries<1>(t, scores, s0, s1, q0, nq, c0, cmask, a); break;
        }
      }
    }
    for (int q = 0; q < t.nq; ++q) {
      float* out = t.out + q * t.out_stride + c0;
      const __m512 w = _mm512_set1_ps(inv[q]);
      for (int v = 0; v < nv; ++v) {
        _mm512_mask_storeu_ps(out + v * 16, cmask[v], _mm512_mul_ps(acc[q * 4 + v], w));
      }
    }
  }
}

}  // namespace

LatentAttentionFn Avx512LatentAttention() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl")
             ? &LatentAttentionAvx512
             : nullptr;
}

}  // namespace moeserve::engine::cpu::internal

#else

namespace moeserve::engine::cpu::internal {
LatentAttentionFn Avx512LatentAttention() { return nullptr; }
}  // namespace moeserve::engine::cpu::internal

#endif
