#include "engine/model/ops.h"

#include <cmath>
#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <cstring>
#include <vector>

#include "common/thread_pool.h"
#include "engine/config.h"
#include "engine/cpu/linear_internal.h"
#include "gtest/gtest.h"
#include "tests/testing/kernel_scope.h"

namespace moeserve::engine::ops {
namespace {

ModelConfig GateConfig(TopkMethod method, ScoringFunc scoring) {
  ModelConfig c;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.topk_method = method;
  c.scoring_func = scoring;
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.0;
  return c;
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

TEST(RouteTokenTest, NoauxTcScoresGroupsBySumOfTopTwoAndWeighsWithoutBias) {
  ModelConfig c = GateConfig(TopkMethod::kNoauxTc, ScoringFunc::kSigmoid);
  // Groups of 2: {0,1} {2,3} {4,5} {6,7}. Expert 0 alone is the strongest, but group 1's pair
  // sums higher; group 3 wins only through the bias.
  std::vector<float> logits = {3.0f, -3.0f, 1.0f, 1.0f, -1.0f, -1.0f, 0.0f, 0.0f};
  std::vector<float> bias = {0, 0, 0, 0, 0, 0, 0.6f, 0.6f};
  int32_t ids[2];
  float w[2];
  RouteToken(c, logits.data(), bias.data(), ids, w);
  // Group sums: g0 = s(3)+s(-3) = 1.0, g1 = 2*s(1) = 1.46, g2 = 0.54, g3 = 2*(0.5+0.6) = 2.2.
  // Kept groups: g3, g1. Choice scores: experts 6,7 = 1.1, experts 2,3 = 0.73.
  EXPECT_EQ(ids[0], 6);
  EXPECT_EQ(ids[1], 7);
  EXPECT_FLOAT_EQ(w[0], Sigmoid(0.0f));  // the unbiased score
  EXPECT_FLOAT_EQ(w[1], Sigmoid(0.0f));
}

TEST(RouteTokenTest, DroppedGroupsAreNeverChosenEvenWithNegativeChoiceScores) {
  ModelConfig c = GateConfig(TopkMethod::kNoauxTc, ScoringFunc::kSigmoid);
  c.num_experts_per_tok = 4;
  std::vector<float> logits(8, 0.0f);
  // Kept groups (0 and 1) have choice scores below zero through the bias; a 0.0 fill (as the
  // Hugging Face code does) would let dropped experts win. They must not.
  std::vector<float> bias = {-0.9f, -0.9f, -0.95f, -0.95f, -2.f, -2.f, -2.f, -2.f};
  int32_t ids[4];
  float w[4];
  RouteToken(c, logits.data(), bias.data(), ids, w);
  for (int j = 0; j < 4; ++j) EXPECT_LT(ids[j], 4) << "expert " << ids[j] << " of a dropped group";
}

TEST(RouteTokenTest, GroupLimitedGreedyScoresGroupsByMax) {
  ModelConfig c = GateConfig(TopkMethod::kGroupLimitedGreedy, ScoringFunc::kSoftmax);
  // g0 max 2.0 (with a weak partner), g1 = {1.5, 1.5}: sum-of-two would prefer g1 over g0, max
  // prefers g0. g3 = 1.8. Kept by max: g0, g3.
  std::vector<float> logits = {2.0f, -5.0f, 1.5f, 1.5f, -5.0f, -5.0f, 1.8f, -5.0f};
  int32_t ids[2];
  float w[2];
  RouteToken(c, logits.data(), nullptr, ids, w);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 6);
  double denom = 0;
  for (float l : logits) denom += std::exp(l);
  EXPECT_NEAR(w[0], std::exp(2.0) / denom, 1e-6);
}

TEST(RouteTokenTest, GreedyIgnoresGroupsNormalisesAndAlwaysScales) {
  ModelConfig c = GateConfig(TopkMethod::kGreedy, ScoringFunc::kSoftmax);
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 16.0;
  std::vector<float> logits = {0.1f, 3.0f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int32_t ids[2];
  float w[2];
  RouteToken(c, logits.data(), nullptr, ids, w);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
  double e1 = std::exp(3.0), e2 = std::exp(2.0);
  EXPECT_NEAR(w[0], 16.0 * e1 / (e1 + e2), 1e-5);
  EXPECT_NEAR(w[1], 16.0 * e2 / (e1 + e2), 1e-5);
}

// Experts come out best first, a tie going to the lower id; checked against a full sort of
// (score descending, id ascending) over many random gates with many ties.
TEST(RouteTokenTest, ChoosesTheBestInOrderWithTiesToTheLowerId) {
  ModelConfig c = GateConfig(TopkMethod::kGreedy, ScoringFunc::kSigmoid);
  c.n_routed_experts = 37;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> level(-3, 3);  // few distinct values: ties everywhere
  for (int64_t k : {int64_t{1}, int64_t{4}, int64_t{9}}) {
    c.num_experts_per_tok = k;
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<float> logits(37);
      for (float& l : logits) l = static_cast<float>(level(rng));
      std::vector<int32_t> want(37);
      for (int32_t i = 0; i < 37; ++i) want[i] = i;
      std::stable_sort(want.begin(), want.end(),
                       [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
      std::vector<int32_t> ids(k);
      std::vector<float> w(k);
      RouteToken(c, logits.data(), nullptr, ids.data(), w.data());
      for (int64_t j = 0; j < k; ++j) ASSERT_EQ(ids[j], want[j]) << "k " << k << " slot " << j;
    }
  }
}

TEST(RopeTest, RotationPreservesNormAndRelativeAngles) {
  ModelConfig c;
  c.qk_rope_head_dim = 8;
  c.rope_theta = 10000;
  std::vector<float> inv;
  double mscale;
  RopeFrequencies(c, &inv, &mscale);
  ASSERT_EQ(inv.size(), 4u);
  EXPECT_DOUBLE_EQ(mscale, 1.0);
  EXPECT_FLOAT_EQ(inv[0], 1.0f);
  EXPECT_NEAR(inv[1], std::pow(10000.0, -2.0 / 8), 1e-7);
  // <rope(q, m), rope(k, n)> depends only on m - n.
  std::vector<float> q = {1, 2, 3, 4, 5, 6, 7, 8}, k = {8, 7, 6, 5, 4, 3, 2, 1};
  auto dot_at = [&](int64_t m, int64_t n) {
    std::vector<float> a = q, b = k, cs(8);
    RopeAngles(inv, mscale, m, cs.data());
    ApplyRope(a.data(), 8, cs.data());
    RopeAngles(inv, mscale, n, cs.data());
    ApplyRope(b.data(), 8, cs.data());
    double d = 0;
    for (int i = 0; i < 8; ++i) d += a[i] * b[i];
    return d;
  };
  EXPECT_NEAR(dot_at(5, 2), dot_at(13, 10), 1e-3);
}

TEST(RopeTest, YarnInterpolatesLowFrequenciesOnly) {
  ModelConfig c;
  c.qk_rope_head_dim = 64;
  c.rope_theta = 10000;
  c.rope_scaling = YarnScaling{40, 4096, 32, 1, 0.707, 0.707};
  std::vector<float> inv;
  double mscale;
  RopeFrequencies(c, &inv, &mscale);
  EXPECT_NEAR(mscale, 1.0, 1e-12);  // mscale == mscale_all_dim cancels
  EXPECT_FLOAT_EQ(inv[0], 1.0f);    // fastest frequency kept
  EXPECT_NEAR(inv[31], std::pow(10000.0, -62.0 / 64) / 40, 1e-12);  // slowest divided by factor
}

// silu(gate) * up against its definition, and the pool's split gives the same bits as one
// thread (out may alias gate, as the model calls it).
TEST(SiluMulTest, MatchesDefinitionAndPoolSplitIsExact) {
  const int64_t n = 100003;
  std::vector<float> gate(n), up(n);
  for (int64_t i = 0; i < n; ++i) {
    gate[i] = static_cast<float>((i * 37) % 2001 - 1000) / 97.0f;
    up[i] = static_cast<float>((i * 11) % 301 - 150) / 31.0f;
  }
  std::vector<float> serial(n);
  SiluMul(gate.data(), up.data(), n, serial.data());
  for (int64_t i = 0; i < n; i += 997) {
    const double g = gate[i];
    EXPECT_NEAR(serial[i], g / (1.0 + std::exp(-g)) * up[i], 1e-5 * (1 + std::fabs(serial[i])));
  }
  ThreadPool pool(3);
  std::vector<float> pooled = gate;
  SiluMul(pooled.data(), up.data(), n, pooled.data(), &pool);
  EXPECT_EQ(std::memcmp(pooled.data(), serial.data(), n * sizeof(float)), 0);
}

// Every path (the AVX-512 one has its own exp) against the definition in double precision, over
// the whole float range: near zero, around the saturation of exp, infinities, NaN, odd lengths
// (the masked tail).
// Every kernel's AddScaled gives the bits of a product rounded to float, then a sum rounded to
// float (computed here in double and rounded at each step: double holds a float product exactly
// and rounds the float sum of two floats correctly). A fused multiply-add would differ.
TEST(AddScaledTest, EveryKernelRoundsTheProductThenTheSum) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const std::string& kernel : cpu::AvailableLinearKernels()) {
    testing::KernelScope scope(kernel);
    for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{37}, int64_t{256}}) {
      std::vector<float> x(n), o(n);
      for (float& v : x) v = dist(rng);
      for (float& v : o) v = dist(rng);
      const float w = dist(rng);
      std::vector<float> want(n);
      int fused_differs = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float p = static_cast<float>(static_cast<double>(w) * x[i]);
        want[i] = static_cast<float>(static_cast<double>(o[i]) + p);
        fused_differs += std::fma(w, x[i], o[i]) != want[i];
      }
      AddScaled(w, x.data(), n, o.data());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(o[i], want[i]) << kernel << " n " << n << " at " << i;
      }
      // The data can tell the two apart (else this test could not see a fused form).
      if (n == 256) {
        EXPECT_GT(fused_differs, 0);
      }
    }
  }
}

TEST(SiluMulTest, EveryKernelMatchesTheDefinitionOverTheRange) {
  std::vector<float> gate = {0.0f, -0.0f, 1e-30f, -1e-30f, 0.5f, -0.5f, 1.0f, -1.0f, 3.7f, -3.7f,
                             20.0f, -20.0f, 87.0f, -87.0f, 88.5f, -88.5f, 89.0f, -89.0f, 103.0f,
                             -103.0f, 1e30f, -1e30f};
  for (int i = -2000; i <= 2000; i += 7) gate.push_back(static_cast<float>(i) / 61.0f);
  const size_t finite = gate.size();
  gate.push_back(std::numeric_limits<float>::infinity());
  gate.push_back(-std::numeric_limits<float>::infinity());
  gate.push_back(std::numeric_limits<float>::quiet_NaN());
  std::vector<float> up(gate.size());
  for (size_t i = 0; i < up.size(); ++i) up[i] = 0.25f + static_cast<float>(i % 13) / 3.0f;
  for (const std::string& kernel : cpu::AvailableLinearKernels()) {
    testing::KernelScope scope(kernel);
    for (size_t n : {gate.size(), gate.size() - 5, size_t{3}}) {
      std::vector<float> out(n, -7.0f);
      SiluMul(gate.data(), up.data(), static_cast<int64_t>(n), out.data());
      for (size_t i = 0; i < n; ++i) {
        const double g = gate[i];
        if (i >= finite) {
          if (std::isnan(g)) {
            EXPECT_TRUE(std::isnan(out[i])) << kernel;
          } else if (g > 0) {
            EXPECT_EQ(out[i], std::numeric_limits<float>::infinity()) << kernel;
          }  // silu(-inf) is -inf / inf: NaN by the definition, not checked
          continue;
        }
        const double want = g / (1.0 + std::exp(-g)) * up[i];
        // (silu(-89) is -3e-37 where float's exp(89) overflows: no path keeps such dust.)
        EXPECT_NEAR(out[i], want, 2e-6 * std::fabs(want) + 1e-30)
            << kernel << " silu(" << g << ") * " << up[i];
      }
    }
  }
}

}  // namespace
}  // namespace moeserve::engine::ops
