#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/http_status.h"
#include "gtest/gtest.h"

namespace moeserve::engine {
namespace {

using Ids = std::vector<int32_t>;

// log_softmax in double, as the reference for reported logprobs.
std::vector<double> LogSoftmax(const std::vector<double>& x) {
  const double max = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (double v : x) sum += std::exp(v - max);
  std::vector<double> out;
  for (double v : x) out.push_back(v - max - std::log(sum));
  return out;
}

std::vector<float> LogitsFromProbs(const std::vector<double>& p) {
  std::vector<float> out;
  for (double v : p) out.push_back(static_cast<float>(std::log(v)));
  return out;
}

// The full reported distribution (vocab <= 20), indexed by id.
std::vector<double> ReportedLogprobs(SamplingParams p, const std::vector<float>& logits,
                                     const Ids& prompt, const Ids& generated) {
  p.logprobs = true;
  p.top_logprobs = static_cast<int32_t>(logits.size());
  Sampler sampler(p, 0);
  SampleResult r = sampler.Sample(logits, prompt, generated);
  std::vector<double> out(logits.size(), 0.0);
  for (const TokenLogprob& t : r.top_logprobs) out[t.token] = t.logprob;
  return out;
}

void ExpectLogprobsOf(const std::vector<double>& processed, const std::vector<double>& got) {
  std::vector<double> want = LogSoftmax(processed);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "id " << i;
}

// Every token drawn in `draws` samples.
std::set<int32_t> Support(const SamplingParams& p, const std::vector<float>& logits,
                          int draws) {
  Sampler sampler(p, 7);
  std::set<int32_t> seen;
  for (int i = 0; i < draws; ++i) seen.insert(sampler.Sample(logits, {}, {}, i).token);
  return seen;
}

TEST(SamplerTest, GreedyPicksLowestIdOnExactTies) {
  SamplingParams p;
  p.temperature = 0.0;
  p.logprobs = true;
  Sampler sampler(p, 0);
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  SampleResult r = sampler.Sample(logits, {}, {});
  EXPECT_EQ(r.token, 1);
  EXPECT_NEAR(r.logprob, LogSoftmax({1, 3, 3, 2, 3})[1], 1e-6);
  EXPECT_TRUE(r.top_logprobs.empty());
  p.logprobs = false;  // no softmax pass: logprob stays 0
  Sampler quiet(p, 0);
  EXPECT_EQ(quiet.Sample(logits, {}, {}).logprob, 0.0f);
}

TEST(SamplerTest, GreedyIgnoresTruncationButAppliesPenalties) {
  SamplingParams p;
  p.temperature = 0.0;
  p.top_k = 1;
  p.top_p = 0.1;
  p.min_p = 0.9;
  p.presence_penalty = 0.5;
  Sampler sampler(p, 0);
  std::vector<float> logits = {0.0f, 3.0f, 2.9f};
  EXPECT_EQ(sampler.Sample(logits, {}, {}).token, 1);
  EXPECT_EQ(sampler.Sample(logits, {}, {1}).token, 2);  // 3.0 - 0.5 < 2.9
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeOnce) {
  SamplingParams p;
  p.repetition_penalty = 2.0;
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f};
  // 0 from the prompt, 1 generated twice (penalised once), 2 and 3 unseen; 99 is out of vocab.
  std::vector<double> got = ReportedLogprobs(p, logits, {0, 99}, {1, 1});
  ExpectLogprobsOf({1.0, -2.0, 0.5, 3.0}, got);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesCountGeneratedTokensOnly) {
  SamplingParams p;
  p.presence_penalty = 0.5;
  p.frequency_penalty = 0.25;
  std::vector<float> logits(5, 0.0f);
  // Token 3 is only in the prompt: untouched. 1 twice: -0.5 - 0.5; 2 once: -0.5 - 0.25.
  std::vector<double> got = ReportedLogprobs(p, logits, {3}, {1, 2, 1, -4});
  ExpectLogprobsOf({0.0, -1.0, -0.75, 0.0, 0.0}, got);
}

TEST(SamplerTest, NegativePenaltiesRaiseLogits) {
  SamplingParams p;
  p.presence_penalty = -1.0;
  p.frequency_penalty = -0.5;
  std::vector<double> got = ReportedLogprobs(p, {0.0f, 0.0f, 0.0f}, {}, {2, 2});
  ExpectLogprobsOf({0.0, 0.0, 2.0}, got);
}

TEST(SamplerTest, RepetitionAppliesBeforeFrequency) {
  SamplingParams p;
  p.repetition_penalty = 2.0;
  p.frequency_penalty = 1.0;
  // Token 0: 4 / 2 - 1 = 1 (the other order would give 1.5).
  std::vector<double> got = ReportedLogprobs(p, {4.0f, 0.0f}, {}, {0});
  ExpectLogprobsOf({1.0, 0.0}, got);
}

// logit_bias adds to the logits after the penalties and before the temperature (the reported
// distribution includes it); a -100 bias moves greedy off the argmax, and a biased request is
// not a plain argmax (the device may not take it for the sampler).
TEST(SamplerTest, LogitBiasAddsAfterPenaltiesBeforeTemperature) {
  SamplingParams p;
  p.frequency_penalty = 1.0;
  p.temperature = 0.5;
  p.logit_bias = {{0, 2.0f}, {2, -1.5f}};
  // Token 0: (0 - 1 + 2) / 0.5 = 2; token 1: 0; token 2: (1 - 1.5) / 0.5 = -1.
  std::vector<double> got = ReportedLogprobs(p, {0.0f, 0.0f, 1.0f}, {}, {0});
  ExpectLogprobsOf({2.0, 0.0, -1.0}, got);
  SamplingParams greedy;
  greedy.temperature = 0;
  EXPECT_TRUE(Sampler(greedy, 1).IsArgmax());
  greedy.logit_bias = {{2, -100.0f}};
  Sampler banned(greedy, 1);
  EXPECT_FALSE(banned.IsArgmax());
  EXPECT_EQ(banned.Sample(std::vector<float>{1.0f, 3.0f, 9.0f}, {}, {}).token, 1);
}

TEST(SamplerTest, LogprobsReportTemperatureScaledDistributionBeforeTruncation) {
  SamplingParams p;
  p.temperature = 0.5;
  p.top_k = 1;
  std::vector<double> got = ReportedLogprobs(p, {0.0f, 1.0f, 2.0f}, {}, {});
  ExpectLogprobsOf({0.0, 2.0, 4.0}, got);
}

TEST(SamplerTest, TopLogprobsAreOrderedWithTiesByLowerId) {
  SamplingParams p;
  p.temperature = 0.0;
  p.logprobs = true;
  p.top_logprobs = 3;
  Sampler sampler(p, 0);
  SampleResult r = sampler.Sample(std::vector<float>{0.0f, 2.0f, 1.0f, 2.0f, 1.0f}, {}, {});
  ASSERT_EQ(r.top_logprobs.size(), 3u);
  EXPECT_EQ(r.top_logprobs[0].token, 1);
  EXPECT_EQ(r.top_logprobs[1].token, 3);
  EXPECT_EQ(r.top_logprobs[2].token, 2);
  std::vector<double> want = LogSoftmax({0, 2, 1, 2, 1});
  EXPECT_NEAR(r.top_logprobs[2].logprob, want[2], 1e-6);
  EXPECT_EQ(r.logprob, r.top_logprobs[0].logprob);
}

TEST(ScoreTokenTest, RawLogSoftmaxWithOrderedAlternatives) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(1000);
  for (float& v : logits) v = normal(rng);
  logits[17] = logits[4];  // a tie among the alternatives' candidates
  std::vector<double> want = LogSoftmax(std::vector<double>(logits.begin(), logits.end()));
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int32_t token : {0, 4, 17, 999}) {
    SampleResult r = ScoreToken(logits, token, 5);
    EXPECT_EQ(r.token, token);
    EXPECT_NEAR(r.logprob, want[token], 1e-4) << "token " << token;
    // vLLM's rank: the token's place in the stable order, ties sharing the better one.
    const int64_t place = std::find(order.begin(), order.end(), token) - order.begin();
    int64_t rank = place + 1;
    while (rank > 1 && logits[order[rank - 2]] == logits[token]) --rank;
    EXPECT_EQ(r.rank, rank) << "token " << token;
    ASSERT_EQ(r.top_logprobs.size(), 5u);
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(r.top_logprobs[i].token, order[i]) << "rank " << i;
      EXPECT_NEAR(r.top_logprobs[i].logprob, want[order[i]], 1e-4) << "rank " << i;
    }
  }
  EXPECT_TRUE(ScoreToken(logits, 3, 0).top_logprobs.empty());
  EXPECT_EQ(ScoreToken(logits, 1000, 0).logprob, -std::numeric_limits<float>::infinity());
  EXPECT_EQ(ScoreToken(logits, -1, 0).logprob, -std::numeric_limits<float>::infinity());
  // Masked tokens (-inf) score -inf; the rest still sum to one.
  std::vector<float> masked = {-INFINITY, 0.0f, 0.0f};
  EXPECT_EQ(ScoreToken(masked, 0, 0).logprob, -std::numeric_limits<float>::infinity());
  EXPECT_NEAR(ScoreToken(masked, 1, 0).logprob, std::log(0.5), 1e-6);
}

TEST(SamplerTest, TopKKeepsExactlyKWithTiesByLowerId) {
  SamplingParams p;
  p.top_k = 3;
  std::vector<float> logits = {0.0f, 1.0f, 2.0f, 1.5f, 1.9f, -3.0f, 0.5f, 1.2f};
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{2, 3, 4}));
  p.top_k = 2;
  EXPECT_EQ(Support(p, {1.0f, 2.0f, 2.0f, 2.0f}, 3000), (std::set<int32_t>{1, 2}));
  p.top_k = 100;  // larger than the vocabulary: off
  EXPECT_EQ(Support(p, {1.0f, 1.0f, 1.0f}, 3000), (std::set<int32_t>{0, 1, 2}));
}

TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  SamplingParams p;
  std::vector<float> logits = LogitsFromProbs({0.1, 0.4, 0.2, 0.3});
  p.top_p = 0.3;
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{1}));
  p.top_p = 0.65;  // 0.4 < 0.65 <= 0.7
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{1, 3}));
  p.top_p = 0.75;
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{1, 2, 3}));
}

TEST(SamplerTest, TopPUsesDistributionRenormalisedAfterTopK) {
  SamplingParams p;
  std::vector<float> logits = LogitsFromProbs({0.4, 0.3, 0.2, 0.1});
  p.top_p = 0.75;
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{0, 1, 2}));
  // After top-3: 0.444, 0.333, 0.222; the first two already reach 0.75.
  p.top_k = 3;
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{0, 1}));
}

TEST(SamplerTest, MinPKeepsTokensAboveFractionOfMax) {
  SamplingParams p;
  std::vector<float> logits = LogitsFromProbs({0.1, 0.4, 0.2, 0.3});
  p.min_p = 0.6;  // threshold 0.24
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{1, 3}));
  p.min_p = 0.3;  // threshold 0.12
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{1, 2, 3}));
  p.top_k = 2;    // composes: top-2 then min-p
  EXPECT_EQ(Support(p, logits, 3000), (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, MaskedTokensAreNeverDrawn) {
  SamplingParams p;
  const float ninf = -INFINITY;
  EXPECT_EQ(Support(p, {ninf, 0.0f, ninf, 0.0f}, 2000), (std::set<int32_t>{1, 3}));
}

std::vector<float> RandomLogits(int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(vocab);
  for (float& v : logits) v = normal(rng);
  return logits;
}

// Brute-force reference of the kept set for a full vocabulary.
std::set<int32_t> ReferenceKeep(const std::vector<float>& logits, int64_t top_k, double top_p) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (top_k > 0) ids.resize(top_k);
  const float max = logits[ids[0]];
  double total = 0.0;
  for (int32_t id : ids) total += std::exp(logits[id] - max);
  std::set<int32_t> keep;
  double cum = 0.0;
  for (int32_t id : ids) {
    if (cum >= top_p * total) break;
    cum += std::exp(logits[id] - max);
    keep.insert(id);
  }
  return keep;
}

TEST(SamplerTest, LargeVocabTruncationMatchesFullSortReference) {
  const int64_t vocab = 129280;
  std::vector<float> logits = RandomLogits(vocab, 3);
  std::vector<float> quantized = logits;  // many exact ties
  for (float& v : quantized) v = std::round(v * 2.0f) / 2.0f;
  for (auto [top_k, top_p] : {std::pair<int64_t, double>{50, 1.0}, {0, 0.9}, {0, 0.2},
                              {2000, 0.95}, {6000, 0.5}, {0, 0.999}}) {
    SamplingParams p;
    p.top_k = top_k;
    p.top_p = top_p;
    std::set<int32_t> keep = ReferenceKeep(logits, top_k, top_p);
    Sampler sampler(p, 11);
    for (int i = 0; i < 20; ++i) {
      int32_t t = sampler.Sample(logits, {}, {}, i).token;
      ASSERT_TRUE(keep.count(t)) << "top_k " << top_k << " top_p " << top_p << " token " << t;
    }
    if (top_p == 0.9) {
      EXPECT_GT(keep.size(), 1024u);  // a dense nucleus
    }
    std::set<int32_t> keep_q = ReferenceKeep(quantized, top_k, top_p);
    for (int i = 0; i < 20; ++i) {
      int32_t t = sampler.Sample(quantized, {}, {}, i).token;
      ASSERT_TRUE(keep_q.count(t)) << "quantized top_k " << top_k << " top_p " << top_p;
    }
  }
}

// Ten heavy tokens scattered in a 40000-token vocabulary over a light tail; the nucleus
// boundary falls among the heavy tokens, so enough draws see the whole kept set.
TEST(SamplerTest, LargeVocabTopPKeepsExactlyTheReferenceSet) {
  std::vector<float> logits = RandomLogits(40000, 4);
  for (int i = 0; i < 10; ++i) logits[1000 + 3917 * i] = 12.0f + 0.1f * static_cast<float>(i);
  for (double top_p : {0.2, 0.4, 0.55}) {
    std::set<int32_t> keep = ReferenceKeep(logits, 0, top_p);
    ASSERT_LT(keep.size(), 10u);
    SamplingParams p;
    p.top_p = top_p;
    EXPECT_EQ(Support(p, logits, 150), keep) << "top_p " << top_p;
  }
}

std::vector<int32_t> Draw(Sampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(sampler.Sample(logits, {}, out).token);
  return out;
}

TEST(SamplerTest, SameSeedSameTokensAndDefaultSeedWhenUnset) {
  std::vector<float> logits = RandomLogits(1000, 5);
  SamplingParams p;
  p.top_p = 0.95;
  p.seed = 42;
  Sampler a(p, 1), b(p, 2);
  std::vector<int32_t> seq = Draw(a, logits, 64);
  EXPECT_EQ(seq, Draw(b, logits, 64));
  p.seed = 43;
  Sampler c(p, 1);
  EXPECT_NE(seq, Draw(c, logits, 64));
  p.seed.reset();
  Sampler d(p, 42), e(p, 42);
  EXPECT_EQ(Draw(d, logits, 64), Draw(e, logits, 64));
}

TEST(SamplerTest, DrawsDoNotDependOnOtherRequestsInTheBatch) {
  std::vector<float> la = RandomLogits(500, 8), lb = RandomLogits(700, 9);
  SamplingParams pa, pb;
  pa.seed = 1;
  pb.seed = 2;
  pb.temperature = 0.8;
  pb.top_k = 40;
  Sampler a_alone(pa, 0), b_alone(pb, 0);
  std::vector<int32_t> want_a = Draw(a_alone, la, 50), want_b = Draw(b_alone, lb, 50);

  Sampler a(pa, 0), b(pb, 0);
  std::vector<int32_t> got_a, got_b;
  for (int i = 0; i < 50; ++i) {  // interleaved, b sometimes first
    if (i % 3 == 0) got_b.push_back(b.Sample(lb, {}, got_b).token);
    got_a.push_back(a.Sample(la, {}, got_a).token);
    if (i % 3 != 0) got_b.push_back(b.Sample(lb, {}, got_b).token);
  }
  EXPECT_EQ(got_a, want_a);
  EXPECT_EQ(got_b, want_b);
}

// 200k draws at T = 0.7 from an 8-token distribution. Each frequency must be within 5 standard
// errors, sqrt(p(1-p)/N), of the softmax probability, and Pearson's chi-square (7 degrees of
// freedom) below 24.32, its 99.9th percentile.
TEST(SamplerTest, EmpiricalFrequenciesMatchSoftmax) {
  const std::vector<double> raw = {1.0, 0.5, 0.0, -0.5, 2.0, 1.5, -1.0, 0.2};
  const double temperature = 0.7;
  std::vector<double> scaled;
  for (double v : raw) scaled.push_back(v / temperature);
  std::vector<double> prob;
  for (double lp : LogSoftmax(scaled)) prob.push_back(std::exp(lp));
  std::vector<float> logits(raw.begin(), raw.end());

  SamplingParams p;
  p.temperature = temperature;
  p.seed = 20240611;
  Sampler sampler(p, 0);
  const int n = 200000;
  std::vector<int64_t> counts(raw.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[sampler.Sample(logits, {}, {}, i).token];

  double chi2 = 0.0;
  for (size_t i = 0; i < raw.size(); ++i) {
    const double f = static_cast<double>(counts[i]) / n;
    const double se = std::sqrt(prob[i] * (1.0 - prob[i]) / n);
    EXPECT_LT(std::abs(f - prob[i]), 5.0 * se) << "token " << i;
    const double expected = prob[i] * n;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 24.32);
}

TEST(SamplerTest, TopPEmpiricalSupportAndRenormalisedFrequencies) {
  // p = 0.35 0.25 0.2 0.1 0.05 0.05; top_p 0.7 keeps {0, 1, 2} (0.6 < 0.7 <= 0.8).
  std::vector<double> prob = {0.35, 0.25, 0.2, 0.1, 0.05, 0.05};
  SamplingParams p;
  p.top_p = 0.7;
  p.seed = 99;
  Sampler sampler(p, 0);
  std::vector<float> logits = LogitsFromProbs(prob);
  const int n = 200000;
  std::vector<int64_t> counts(prob.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[sampler.Sample(logits, {}, {}, i).token];
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
  EXPECT_EQ(counts[3] + counts[4] + counts[5], 0);
  for (int i = 0; i < 3; ++i) {
    const double q = prob[i] / 0.8;
    const double se = std::sqrt(q * (1.0 - q) / n);
    EXPECT_LT(std::abs(static_cast<double>(counts[i]) / n - q), 5.0 * se) << "token " << i;
  }
}

TEST(SamplerTest, IsStop) {
  SamplingParams p;
  p.stop_token_ids = {5, 9};
  Sampler sampler(p, 0);
  EXPECT_TRUE(sampler.IsStop(5));
  EXPECT_TRUE(sampler.IsStop(9));
  EXPECT_FALSE(sampler.IsStop(6));
}

void ExpectInvalid(const SamplingParams& p, const std::string& needle) {
  absl::Status s = ValidateSamplingParams(p, 100);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << needle;
  EXPECT_NE(std::string(s.message()).find(needle), std::string::npos) << s.message();
}

TEST(ValidateSamplingParamsTest, AcceptsDefaultsAndBounds) {
  SamplingParams p;
  EXPECT_TRUE(ValidateSamplingParams(p, 100).ok());
  p.temperature = 2.0;
  p.top_p = 1.0;
  p.min_p = 1.0;
  p.presence_penalty = -2.0;
  p.frequency_penalty = 2.0;
  p.repetition_penalty = 1.3;
  p.logprobs = true;
  p.top_logprobs = 20;
  p.stop_token_ids = {0, 99};
  EXPECT_TRUE(ValidateSamplingParams(p, 100).ok());
}

TEST(ValidateSamplingParamsTest, RejectsEachOutOfRangeField) {
  auto with = [](auto edit) {
    SamplingParams p;
    edit(p);
    return p;
  };
  ExpectInvalid(with([](SamplingParams& p) { p.temperature = -0.1; }), "temperature");
  ExpectInvalid(with([](SamplingParams& p) { p.temperature = 2.5; }), "temperature");
  ExpectInvalid(with([](SamplingParams& p) { p.temperature = NAN; }), "temperature");
  ExpectInvalid(with([](SamplingParams& p) { p.top_k = -1; }), "top_k");
  ExpectInvalid(with([](SamplingParams& p) { p.top_p = 0.0; }), "top_p");
  ExpectInvalid(with([](SamplingParams& p) { p.top_p = 1.01; }), "top_p");
  ExpectInvalid(with([](SamplingParams& p) { p.min_p = -0.1; }), "min_p");
  ExpectInvalid(with([](SamplingParams& p) { p.min_p = 1.1; }), "min_p");
  ExpectInvalid(with([](SamplingParams& p) { p.presence_penalty = 2.1; }), "presence_penalty");
  ExpectInvalid(with([](SamplingParams& p) { p.frequency_penalty = -3; }), "frequency_penalty");
  ExpectInvalid(with([](SamplingParams& p) { p.repetition_penalty = 0; }), "repetition_penalty");
  ExpectInvalid(with([](SamplingParams& p) { p.repetition_penalty = -1; }), "repetition_penalty");
  ExpectInvalid(with([](SamplingParams& p) {
                  p.logprobs = true;
                  p.top_logprobs = 21;
                }),
                "top_logprobs");
  ExpectInvalid(with([](SamplingParams& p) { p.top_logprobs = 2; }), "requires logprobs");
  ExpectInvalid(with([](SamplingParams& p) { p.stop_token_ids = {3, 100}; }), "stop token id 100");
  ExpectInvalid(with([](SamplingParams& p) { p.stop_token_ids = {-1}; }), "stop token id -1");
  ExpectInvalid(with([](SamplingParams& p) { p.logit_bias = {{100, 1.0f}}; }), "token id 100");
  ExpectInvalid(with([](SamplingParams& p) { p.logit_bias = {{3, 100.5f}}; }), "[-100, 100]");
  ExpectInvalid(with([](SamplingParams& p) { p.logit_bias = {{3, NAN}}; }), "[-100, 100]");
  ExpectInvalid(with([](SamplingParams& p) { p.logit_bias = {{3, 1.0f}, {3, 2.0f}}; }),
                "appears twice");
  // Each error names its field (the API's "param"), so the gateway need not check again.
  for (const auto& [params, field] : std::vector<std::pair<SamplingParams, std::string>>{
           {with([](SamplingParams& p) { p.logit_bias = {{100, 1.0f}}; }), "logit_bias"},
           {with([](SamplingParams& p) { p.stop_token_ids = {100}; }), "stop_token_ids"},
           {with([](SamplingParams& p) { p.top_k = -1; }), "top_k"}}) {
    const auto param = ValidateSamplingParams(params, 100).GetPayload(kErrorParamPayload);
    ASSERT_TRUE(param.has_value()) << field;
    EXPECT_EQ(std::string(*param), field);
  }
}

}  // namespace
}  // namespace moeserve::engine

namespace moeserve::engine {
namespace {

// A request moved to another worker (a fresh Sampler with the tokens generated so far) must
// continue with exactly the draws the original would have made.
TEST(SamplerTest, FreshSamplerWithTheSameHistoryContinuesTheSameStream) {
  std::vector<float> logits(64);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 37) % 11) * 0.3f;
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 1234;
  Sampler original(p, 0);
  std::vector<int32_t> generated;
  for (int i = 0; i < 12; ++i) generated.push_back(original.Sample(logits, {}, generated).token);
  for (size_t cut = 0; cut < generated.size(); ++cut) {
    Sampler moved(p, 0);
    std::vector<int32_t> history(generated.begin(), generated.begin() + cut);
    EXPECT_EQ(moved.Sample(logits, {}, history).token, generated[cut]) << "after " << cut;
  }
  // And the draws really vary along the stream (the check above is not vacuous).
  EXPECT_GT(std::set<int32_t>(generated.begin(), generated.end()).size(), 3u);
}

}  // namespace
}  // namespace moeserve::engine
