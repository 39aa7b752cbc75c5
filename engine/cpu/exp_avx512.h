#ifndef MOESERVE_ENGINE_CPU_EXP_AVX512_H_
#define MOESERVE_ENGINE_CPU_EXP_AVX512_H_

// e^x on 16 float32 lanes, for the AVX-512 code (attention's softmax, SiluMul). Include only from
// x86 translation units; the function carries its own target, so callers compiled for AVX-512
// inline it.

#include <immintrin.h>

namespace moeserve::engine::cpu {

// x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so n ln2 is exact), e^r by a degree-6
// polynomial (relative error below 2e-7), scaled by 2^n with vscalefps. x is clamped to
// [-87, 89] first, so the reduction stays exact: below, the result is e^-87 (a normal float),
// not 0 (callers mask what must be exactly zero); e^89 overflows to inf, as e^x does (SiluMul
// relies on it: silu(-1e30) is -0, not -1e30 / e^88). vminps and vmaxps return their second
// operand for a NaN, so a NaN goes through.
__attribute__((target("avx512f"))) inline __m512 Exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace moeserve::engine::cpu

#endif  // MOESERVE_ENGINE_CPU_EXP_AVX512_H_
