#include "engine/model/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#if defined(__x86_64__)
#include <immintrin.h>

#include "engine/cpu/exp_avx512.h"
#endif

#include "common/log.h"
#include "engine/cpu/linear.h"

namespace moeserve::engine::ops {

void RmsNorm(const float* x, const float* w, int64_t dim, double eps, float* out) {
  // Squares are exact in double. Eight partial sums (lane j takes the elements j mod 8) added by
  // one fixed tree: the same bits on any thread or batch, and chains short enough to vectorise
  // (one sequential double sum was a latency-bound 4 cycles per element).
  double lane[8] = {};
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    for (int j = 0; j < 8; ++j) lane[j] += static_cast<double>(x[i + j]) * x[i + j];
  }
  for (int j = 0; i < dim; ++i, ++j) lane[j] += static_cast<double>(x[i]) * x[i];
  const double sum = ((lane[0] + lane[4]) + (lane[2] + lane[6])) +
                     ((lane[1] + lane[5]) + (lane[3] + lane[7]));
  float inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
  for (int64_t d = 0; d < dim; ++d) out[d] = x[d] * inv * w[d];
}

namespace {
double CorrectionDim(double rotations, int64_t dim, double base, int64_t max_pos) {
  return (static_cast<double>(dim) * std::log(static_cast<double>(max_pos) / (rotations * 2 * M_PI))) /
         (2 * std::log(base));
}
}  // namespace

void RopeFrequencies(const ModelConfig& config, std::vector<float>* inv_freq, double* mscale) {
  const int64_t dim = config.qk_rope_head_dim;
  const int64_t half = dim / 2;
  const double base = config.rope_theta;
  inv_freq->assign(half, 0.0f);
  *mscale = 1.0;
  for (int64_t i = 0; i < half; ++i) {
    (*inv_freq)[i] = static_cast<float>(1.0 / std::pow(base, static_cast<double>(2 * i) / dim));
  }
  if (!config.rope_scaling) return;
  const YarnScaling& y = *config.rope_scaling;
  double low = std::floor(CorrectionDim(y.beta_fast, dim, base, y.original_max_position_embeddings));
  double high = std::ceil(CorrectionDim(y.beta_slow, dim, base, y.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    double extra = 1.0 / std::pow(base, static_cast<double>(2 * i) / dim);
    double inter = extra / y.factor;
    double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    double extra_weight = 1.0 - ramp;
    (*inv_freq)[i] = static_cast<float>(inter * (1.0 - extra_weight) + extra * extra_weight);
  }
  *mscale = YarnGetMscale(y.factor, y.mscale) / YarnGetMscale(y.factor, y.mscale_all_dim);
}

void RopeAngles(const std::vector<float>& inv_freq, double mscale, int64_t pos, float* cos_sin) {
  const size_t half = inv_freq.size();
  for (size_t i = 0; i < half; ++i) {
    double angle = static_cast<double>(pos) * static_cast<double>(inv_freq[i]);
    cos_sin[i] = static_cast<float>(std::cos(angle) * mscale);
    cos_sin[half + i] = static_cast<float>(std::sin(angle) * mscale);
  }
}

void ApplyRope(float* x, int64_t dim, const float* cos_sin) {
  const int64_t half = dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    float c = cos_sin[i], s = cos_sin[half + i];
    float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = b * c + a * s;
  }
}

namespace {

void SiluMulScalar(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

#if defined(__x86_64__)
// GCC 12's avx512fintrin.h builds _mm512_undefined_ps from a self-initialised variable, which
// -Wmaybe-uninitialized reports where roundscale and scalef inline (as in linear_avx512.cc).
// SiluMul uses attention's e^x (engine/cpu/exp_avx512.h).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define MOESERVE_OPS_AVX512 __attribute__((target("avx512f")))

MOESERVE_OPS_AVX512 void SiluMulAvx512(const float* gate, const float* up, int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 e = cpu::Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
  }
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 g = _mm512_maskz_loadu_ps(mask, gate + i);
    const __m512 e = cpu::Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + i, mask, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mask, up + i)));
  }
}
// The explicitly rounded forms are builtins the compiler never contracts into an FMA, as it may
// a plain product and sum where FMA is enabled.
MOESERVE_OPS_AVX512 void AddScaledAvx512(float w, const float* x, int64_t n, float* o) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 wv = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 p = _mm512_mul_round_ps(wv, _mm512_loadu_ps(x + i), kRound);
    _mm512_storeu_ps(o + i, _mm512_add_round_ps(_mm512_loadu_ps(o + i), p, kRound));
  }
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 p = _mm512_mul_round_ps(wv, _mm512_maskz_loadu_ps(mask, x + i), kRound);
    _mm512_mask_storeu_ps(o + i, mask,
                          _mm512_add_round_ps(_mm512_maskz_loadu_ps(mask, o + i), p, kRound));
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// The vector form goes with the Linear kernels in force (MOESERVE_KERNEL=avx2 or scalar runs
// the whole engine as a machine without AVX-512 would).
bool UseAvx512() {
#if defined(__x86_64__)
  return std::strcmp(cpu::LinearKernelName(), "avx512") == 0;
#else
  return false;
#endif
}

}  // namespace

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
#if defined(__x86_64__)
  if (UseAvx512()) {
    SiluMulAvx512(gate, up, n, out);
    return;
  }
#endif
  SiluMulScalar(gate, up, n, out);
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out, ThreadPool* pool) {
  constexpr int64_t kGrain = 16 * 1024;
  if (pool == nullptr || n < 2 * kGrain) {
    SiluMul(gate, up, n, out);
    return;
  }
  pool->ParallelFor(n, kGrain, [&](int64_t b, int64_t e) { SiluMul(gate + b, up + b, e - b, out + b); });
}

void AddScaled(float w, const float* x, int64_t n, float* o) {
#if defined(__x86_64__)
  if (UseAvx512()) {
    AddScaledAvx512(w, x, n, o);
    return;
  }
#endif
  // Built for the base x86-64, which has no FMA to contract this into.
  for (int64_t i = 0; i < n; ++i) o[i] += w * x[i];
}

void Softmax(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

namespace {
// Indices of the k largest values (descending; ties to the lower index).
void TopK(const float* v, int64_t n, int64_t k, int32_t* out) {
  // Insertion into the sorted best k (k is a few): larger first, a tie to the lower index.
  MOESERVE_DCHECK(k <= n);
  int64_t size = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (size == k && !(v[i] > v[out[k - 1]])) continue;
    int64_t p = size < k ? size++ : k - 1;
    for (; p > 0 && v[i] > v[out[p - 1]]; --p) out[p] = out[p - 1];
    out[p] = static_cast<int32_t>(i);
  }
}
}  // namespace

void RouteToken(const ModelConfig& config, const float* logits, const float* bias, int32_t* ids,
                float* weights) {
  const int64_t e = config.n_routed_experts;
  const int64_t k = config.num_experts_per_tok;
  // Per-thread scratch: a prefill routes every token, and allocations were most of the cost.
  thread_local std::vector<float> scores, choice, group_score;
  thread_local std::vector<int32_t> kept;
  scores.assign(logits, logits + e);
  if (config.scoring_func == ScoringFunc::kSoftmax) {
    Softmax(scores.data(), e);
  } else {
    for (float& s : scores) s = 1.0f / (1.0f + std::exp(-s));
  }
  choice = scores;
  if (config.topk_method == TopkMethod::kNoauxTc && bias != nullptr) {
    for (int64_t i = 0; i < e; ++i) choice[i] += bias[i];
  }
  if (config.topk_method != TopkMethod::kGreedy && config.n_group > 1) {
    const int64_t groups = config.n_group;
    const int64_t per = e / groups;
    group_score.resize(groups);
    for (int64_t g = 0; g < groups; ++g) {
      const float* s = choice.data() + g * per;
      if (config.topk_method == TopkMethod::kNoauxTc) {
        int32_t top2[2];
        TopK(s, per, 2, top2);
        group_score[g] = s[top2[0]] + s[top2[1]];
      } else {
        group_score[g] = *std::max_element(s, s + per);
      }
    }
    kept.resize(config.topk_group);
    TopK(group_score.data(), groups, config.topk_group, kept.data());
    for (int64_t g = 0; g < groups; ++g) {
      if (std::find(kept.begin(), kept.end(), g) != kept.end()) continue;
      std::fill(choice.begin() + g * per, choice.begin() + (g + 1) * per,
                -std::numeric_limits<float>::infinity());
    }
  }
  TopK(choice.data(), e, k, ids);
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) {
    weights[j] = scores[ids[j]];
    sum += weights[j];
  }
  if (k > 1 && config.norm_topk_prob) {
    float denom = static_cast<float>(sum) + 1e-20f;
    for (int64_t j = 0; j < k; ++j) weights[j] /= denom;
  }
  for (int64_t j = 0; j < k; ++j) {
    weights[j] = static_cast<float>(weights[j] * config.routed_scaling_factor);
  }
}

}  // namespace moeserve::engine::ops
