// AVX2 + FMA micro-kernels for Linear: 8 float32 lanes per accumulator (16 ymm registers allow
// a 4x3 tile). bf16 weights are widened to float32 exactly before the f32 FMA.

#include "engine/cpu/linear_kernels.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <cstring>
#include <utility>

#define MOESERVE_AVX2 __attribute__((target("avx2,fma")))

namespace moeserve::engine::cpu::internal {
namespace {

constexpr int kLanes = 8;
constexpr int kRows = 4;
constexpr int kCols = 3;

MOESERVE_AVX2 inline __m256 WidenBf16x8(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <bool kBf16>
MOESERVE_AVX2 inline __m256 LoadW(const void* w, int64_t i) {
  if constexpr (kBf16) {
    return WidenBf16x8(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i)));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  }
}

// Loads the first n (< 8) elements, zeroing the rest.
template <bool kBf16>
MOESERVE_AVX2 inline __m256 LoadWPartial(const void* w, int64_t i, int64_t n, __m256i mask) {
  if constexpr (kBf16) {
    uint16_t buf[kLanes] = {};
    std::memcpy(buf, static_cast<const uint16_t*>(w) + i, static_cast<size_t>(n) * sizeof(uint16_t));
    return WidenBf16x8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(buf)));
  } else {
    return _mm256_maskload_ps(static_cast<const float*>(w) + i, mask);
  }
}

// The one reduction tree: halves 256 -> 128 -> 64 -> 32.
MOESERVE_AVX2 inline float Reduce(__m256 v) {
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
  return _mm_cvtss_f32(s1);
}

template <int MR, int NR, bool kBf16>
MOESERVE_AVX2 void Tile(const TileArgs& a) {
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      acc[i][j] = a.first ? _mm256_setzero_ps() : _mm256_loadu_ps(a.acc + (i * NR + j) * kLanes);
    }
  }
  const float* x = a.x;
  const int64_t x_row = a.x_row;
  const int64_t w_row = a.w_row;
  int64_t xo = 0;
  int64_t wo = 0;
  int64_t k = 0;
  // One step reads NR * kLanes weights; prefetch as many cache lines of the next region.
  constexpr int kPrefetchLines = (NR * kLanes * (kBf16 ? 2 : 4) + 63) / 64;
  const char* pf = a.prefetch;
  for (; k + kLanes <= a.kn; k += kLanes, xo += a.x_step, wo += a.w_step) {
    if (pf != nullptr) {
#pragma GCC unroll 8
      for (int p = 0; p < kPrefetchLines; ++p) _mm_prefetch(pf + p * 64, _MM_HINT_T0);
      pf += kPrefetchLines * 64;
    }
    __m256 wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = LoadW<kBf16>(a.w, j * w_row + wo);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m256 xv = _mm256_loadu_ps(x + i * x_row + xo);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (k < a.kn) {
    const int64_t n = a.kn - k;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = LoadWPartial<kBf16>(a.w, j * w_row + wo, n, mask);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m256 xv = _mm256_maskload_ps(x + i * x_row + xo, mask);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      if (a.last) {
        a.y[i * a.ldy + j] = Reduce(acc[i][j]);
      } else {
        _mm256_storeu_ps(a.acc + (i * NR + j) * kLanes, acc[i][j]);
      }
    }
  }
}

template <bool kBf16, size_t... I>
void FillTiles(KernelSet& ks, std::index_sequence<I...>) {
  ((ks.tile[kBf16][I / kCols][I % kCols] =
        &Tile<static_cast<int>(I / kCols) + 1, static_cast<int>(I % kCols) + 1, kBf16>),
   ...);
}

KernelSet MakeKernelSet() {
  static_assert(kRows <= kMaxTileRows && kCols <= kMaxTileCols);
  KernelSet ks{};
  ks.name = "avx2";
  ks.lanes = kLanes;
  ks.tile_rows = kRows;
  ks.tile_cols = kCols;
  FillTiles<false>(ks, std::make_index_sequence<kRows * kCols>());
  FillTiles<true>(ks, std::make_index_sequence<kRows * kCols>());
  return ks;
}

}  // namespace

const KernelSet* Avx2Kernels() {
  static const KernelSet* const kernels = []() -> const KernelSet* {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return nullptr;
    static const KernelSet ks = MakeKernelSet();
    return &ks;
  }();
  return kernels;
}

}  // namespace moeserve::engine::cpu::internal

#else  // not x86

namespace moeserve::engine::cpu::internal {
const KernelSet* Avx2Kernels() { return nullptr; }
}  // namespace moeserve::engine::cpu::internal

#endif
