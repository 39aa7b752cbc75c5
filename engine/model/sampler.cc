#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moeserve::engine {
namespace {

constexpr int32_t kMaxTopLogprobs = 20;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// SplitMix64's output function.
uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// True when lo <= v <= hi (false for NaN).
bool InRange(double v, double lo, double hi) { return v >= lo && v <= hi; }

absl::Status RangeError(absl::string_view field, double value, absl::string_view range) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", value, " is outside ", range));
}

// Scratch reused across calls on one thread so a 129k-entry vocab costs no allocation per step.
struct Scratch {
  std::vector<float> x;        // processed logits
  std::vector<float> w;        // exp(x - max)
  std::vector<int32_t> ids;    // candidate ids
  std::vector<int32_t> hist;   // sorted history copy
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Strict total order: larger logit first, lower id on ties.
struct ByLogitDesc {
  const float* x;
  bool operator()(int32_t a, int32_t b) const {
    return x[a] > x[b] || (x[a] == x[b] && a < b);
  }
};

void ApplyPenalties(const SamplingParams& p, absl::Span<const int32_t> prompt,
                    absl::Span<const int32_t> generated, std::vector<int32_t>& hist,
                    std::vector<float>& x) {
  const auto vocab = static_cast<int64_t>(x.size());
  auto in_vocab = [vocab](int32_t t) { return t >= 0 && t < vocab; };
  if (p.repetition_penalty != 1.0) {
    hist.clear();
    for (int32_t t : prompt) {
      if (in_vocab(t)) hist.push_back(t);
    }
    for (int32_t t : generated) {
      if (in_vocab(t)) hist.push_back(t);
    }
    std::sort(hist.begin(), hist.end());
    hist.erase(std::unique(hist.begin(), hist.end()), hist.end());
    const double r = p.repetition_penalty;
    for (int32_t t : hist) {
      const double v = x[t];
      x[t] = static_cast<float>(v > 0 ? v / r : v * r);
    }
  }
  if (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) {
    hist.clear();
    for (int32_t t : generated) {
      if (in_vocab(t)) hist.push_back(t);
    }
    std::sort(hist.begin(), hist.end());
    for (size_t i = 0; i < hist.size();) {
      size_t j = i;
      while (j < hist.size() && hist[j] == hist[i]) ++j;
      const double count = static_cast<double>(j - i);
      x[hist[i]] = static_cast<float>(x[hist[i]] - p.presence_penalty -
                                      p.frequency_penalty * count);
      i = j;
    }
  }
}

// The n best ids by ByLogitDesc, best first, in one pass (n is at most 20).
std::vector<int32_t> TopN(const std::vector<float>& x, int32_t n) {
  std::vector<int32_t> top;
  if (n <= 0) return top;
  const ByLogitDesc better{x.data()};
  for (int32_t i = 0; i < static_cast<int32_t>(x.size()); ++i) {
    if (static_cast<int32_t>(top.size()) == n && !better(i, top.back())) continue;
    auto pos = std::upper_bound(top.begin(), top.end(), i, better);
    top.insert(pos, i);
    if (static_cast<int32_t>(top.size()) > n) top.pop_back();
  }
  return top;
}

// Keeps the smallest prefix of `ids` (ordered by ByLogitDesc) whose weight reaches
// top_p * total: id j stays iff the weight before it is < top_p * total. The first `sorted`
// entries are already in order; the rest is ordered progressively (nth_element + sort of a
// growing window), so a peaked distribution touches only a few hundred entries.
void TruncateTopP(double top_p, double total, const std::vector<float>& x,
                  const std::vector<float>& w, size_t sorted, std::vector<int32_t>& ids) {
  const ByLogitDesc better{x.data()};
  const double limit = top_p * total;
  double cum = 0.0;
  size_t j = 0;
  while (j < ids.size()) {
    if (j == sorted) {
      const size_t want = std::min(ids.size(), std::max<size_t>(256, 2 * sorted));
      if (want < ids.size()) {
        std::nth_element(ids.begin() + sorted, ids.begin() + want, ids.end(), better);
      }
      std::sort(ids.begin() + sorted, ids.begin() + want, better);
      sorted = want;
    }
    if (cum >= limit) break;
    cum += w[ids[j]];
    ++j;
  }
  ids.resize(std::max<size_t>(j, 1));
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size) {
  if (!InRange(p.temperature, 0.0, 2.0)) return RangeError("temperature", p.temperature, "[0, 2]");
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k ", p.top_k, " must be >= 0 (0 = off)"));
  }
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) return RangeError("top_p", p.top_p, "(0, 1]");
  if (!InRange(p.min_p, 0.0, 1.0)) return RangeError("min_p", p.min_p, "[0, 1]");
  if (!InRange(p.presence_penalty, -2.0, 2.0)) {
    return RangeError("presence_penalty", p.presence_penalty, "[-2, 2]");
  }
  if (!InRange(p.frequency_penalty, -2.0, 2.0)) {
    return RangeError("frequency_penalty", p.frequency_penalty, "[-2, 2]");
  }
  if (!(p.repetition_penalty > 0.0 && std::isfinite(p.repetition_penalty))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty ", p.repetition_penalty, " must be finite and > 0 (1 = off)"));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs ", p.top_logprobs, " is outside [0, ", kMaxTopLogprobs, "]"));
  }
  if (p.top_logprobs > 0 && !p.logprobs) {
    return absl::InvalidArgumentError("top_logprobs requires logprobs to be true");
  }
  for (int32_t t : p.stop_token_ids) {
    if (t < 0 || t >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token id ", t, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, uint64_t default_seed)
    : params_(params), key_(Mix(params.seed.value_or(default_seed))) {}

bool Sampler::IsStop(int32_t token) const {
  return std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), token) !=
         params_.stop_token_ids.end();
}

double Sampler::Uniform() const {
  const uint64_t z = Mix(key_ + (step_ + 1) * kGolden);
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

SampleResult Sampler::Sample(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                             absl::Span<const int32_t> generated) {
  Scratch& s = ThreadScratch();
  std::vector<float>& x = s.x;
  x.assign(logits.begin(), logits.end());
  const auto vocab = static_cast<int32_t>(x.size());
  ApplyPenalties(params_, prompt, generated, s.hist, x);

  const bool greedy = params_.temperature == 0.0;
  if (!greedy && params_.temperature != 1.0) {
    const double inv_t = 1.0 / params_.temperature;
    for (float& v : x) v = static_cast<float>(v * inv_t);
  }

  // Argmax (lowest id on ties) doubles as the softmax shift.
  int32_t best = 0;
  for (int32_t i = 1; i < vocab; ++i) {
    if (x[i] > x[best]) best = i;
  }
  const float max = x[best];
  std::vector<float>& w = s.w;
  w.resize(x.size());
  double total = 0.0;
  if (std::isfinite(max)) {
    for (int32_t i = 0; i < vocab; ++i) {
      w[i] = std::exp(x[i] - max);
      total += w[i];
    }
  } else {  // every token masked: report token 0 with -inf
    std::fill(w.begin(), w.end(), 0.0f);
  }
  // With every token masked, log_z = 0 makes every reported logprob -inf.
  const double log_z = std::isfinite(max) ? max + std::log(total) : 0.0;

  int32_t token = best;
  if (!greedy && std::isfinite(max)) {
    const double u = Uniform();
    std::vector<int32_t>& ids = s.ids;
    const bool top_k = params_.top_k > 0 && params_.top_k < vocab;
    const bool top_p = params_.top_p < 1.0;
    const bool min_p = params_.min_p > 0.0;
    ids.clear();
    if (!top_k && !top_p) {
      for (int32_t i = 0; i < vocab; ++i) {
        if (w[i] > 0.0f && (!min_p || w[i] >= params_.min_p)) ids.push_back(i);
      }
    } else {
      ids.resize(x.size());
      for (int32_t i = 0; i < vocab; ++i) ids[i] = i;
      const ByLogitDesc better{x.data()};
      size_t sorted = 0;
      double kept = total;
      if (top_k) {
        const auto k = static_cast<size_t>(params_.top_k);
        std::nth_element(ids.begin(), ids.begin() + k, ids.end(), better);
        ids.resize(k);
        kept = 0.0;
        for (int32_t id : ids) kept += w[id];
        if (top_p) {
          std::sort(ids.begin(), ids.end(), better);
          sorted = k;
        }
      }
      if (top_p) TruncateTopP(params_.top_p, kept, x, w, sorted, ids);
      // p_max is w == 1 (the argmax survives every truncation), so min-p is w >= min_p.
      ids.erase(std::remove_if(ids.begin(), ids.end(),
                               [&](int32_t id) {
                                 return w[id] == 0.0f || (min_p && w[id] < params_.min_p);
                               }),
                ids.end());
    }
    double mass = 0.0;
    for (int32_t id : ids) mass += w[id];
    const double target = u * mass;
    double cum = 0.0;
    token = ids.empty() ? best : ids.back();  // rounding fallback
    for (int32_t id : ids) {
      cum += w[id];
      if (cum > target) {
        token = id;
        break;
      }
    }
  }

  SampleResult result;
  result.token = token;
  result.logprob = static_cast<float>(x[token] - log_z);
  if (params_.logprobs && params_.top_logprobs > 0) {
    for (int32_t id : TopN(x, std::min(params_.top_logprobs, vocab))) {
      result.top_logprobs.push_back({id, static_cast<float>(x[id] - log_z)});
    }
  }
  ++step_;
  return result;
}

}  // namespace moeserve::engine
