// AVX-512 (F, BW, VL) micro-kernels for Linear: 16 float32 lanes per accumulator. bf16 weights
// are widened to float32 exactly (a 16-bit shift) and multiplied with f32 FMA, so the bf16 and
// f32 paths give identical results for identical (widened) weights.

#include "engine/cpu/linear_kernels.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

// GCC 12's avx512fintrin.h builds _mm512_undefined_* from a self-initialised variable, which
// -Wmaybe-uninitialized reports wherever _mm512_cvtepu16_epi32 or _mm512_slli_epi32 inline.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <utility>

#define MOESERVE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

namespace moeserve::engine::cpu::internal {
namespace {

constexpr int kLanes = 16;

template <bool kBf16>
MOESERVE_AVX512 inline __m512 LoadW(const void* w, int64_t i) {
  if constexpr (kBf16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  }
}

template <bool kBf16>
MOESERVE_AVX512 inline __m512 LoadWMasked(const void* w, int64_t i, __mmask16 mask) {
  if constexpr (kBf16) {
    __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(w) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(w) + i);
  }
}

// The lane sums of up to four accumulators, reduced and stored to y[0, NR). Every vector goes
// through the one tree (lane i + lane i+8, then + i+4, + i+2, + i+1; float addition commutes
// exactly), four at a time through 128-bit-lane shuffles: 15 instructions for four outputs, where
// reducing one vector at a time took 28. With k of a few hundred, one-at-a-time reductions were a
// fifth of a tile's instructions.
template <int NR>
MOESERVE_AVX512 inline void ReduceStore(const __m512 (&v)[NR], float* y) {
  static_assert(NR >= 1 && NR <= 4);
  const __m512 zero = _mm512_setzero_ps();
  const __m512 a = v[0];
  const __m512 b = NR > 1 ? v[NR > 1 ? 1 : 0] : zero;
  const __m512 c = NR > 2 ? v[NR > 2 ? 2 : 0] : zero;
  const __m512 d = NR > 3 ? v[NR > 3 ? 3 : 0] : zero;
  // i + i+8: [a lanes 0-7 | b lanes 0-7], each lane plus the one 8 above.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  // i + i+4: one 128-bit quarter per vector, [a | b | c | d].
  const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  // i + i+2, then i + i+1: lane 0 of each quarter holds its vector's sum.
  const __m512 h = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512 s = _mm512_add_ps(h, _mm512_permute_ps(h, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512 sums = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0,
                                                              0, 0, 0, 0, 0),
                                            s);
  _mm_mask_storeu_ps(y, static_cast<__mmask8>((1u << NR) - 1u), _mm512_castps512_ps128(sums));
}

template <int MR, int NR, bool kBf16>
MOESERVE_AVX512 void Tile(const TileArgs& a) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      acc[i][j] = a.first ? _mm512_setzero_ps() : _mm512_loadu_ps(a.acc + (i * NR + j) * kLanes);
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
    __m512 wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = LoadW<kBf16>(a.w, j * w_row + wo);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m512 xv = _mm512_loadu_ps(x + i * x_row + xo);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (k < a.kn) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (a.kn - k)) - 1u);
    __m512 wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = LoadWMasked<kBf16>(a.w, j * w_row + wo, mask);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + i * x_row + xo);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (a.last) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) ReduceStore<NR>(acc[i], a.y + i * a.ldy);
    return;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(a.acc + (i * NR + j) * kLanes, acc[i][j]);
  }
}

template <bool kBf16, size_t... I>
void FillTiles(KernelSet& ks, std::index_sequence<I...>) {
  ((ks.tile[kBf16][I / kMaxTileCols][I % kMaxTileCols] =
        &Tile<static_cast<int>(I / kMaxTileCols) + 1, static_cast<int>(I % kMaxTileCols) + 1, kBf16>),
   ...);
}

KernelSet MakeKernelSet() {
  KernelSet ks{};
  ks.name = "avx512";
  ks.lanes = kLanes;
  ks.tile_rows = 6;
  ks.tile_cols = 4;
  FillTiles<false>(ks, std::make_index_sequence<kMaxTileRows * kMaxTileCols>());
  FillTiles<true>(ks, std::make_index_sequence<kMaxTileRows * kMaxTileCols>());
  return ks;
}

}  // namespace

const KernelSet* Avx512Kernels() {
  static const KernelSet* const kernels = []() -> const KernelSet* {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl")) {
      return nullptr;
    }
    static const KernelSet ks = MakeKernelSet();
    return &ks;
  }();
  return kernels;
}

}  // namespace moeserve::engine::cpu::internal

#else  // not x86

namespace moeserve::engine::cpu::internal {
const KernelSet* Avx512Kernels() { return nullptr; }
}  // namespace moeserve::engine::cpu::internal

#endif
