#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "engine/backend.h"

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
  return InvalidParam(field, absl::StrCat(field, " ", value, " is outside ", range));
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
  for (const auto& [id, bias] : p.logit_bias) {
    if (in_vocab(id)) x[id] += bias;
  }
}

// The n best ids by ByLogitDesc, best first, in one pass (n is at most 20).
std::vector<int32_t> TopN(absl::Span<const float> x, int32_t n) {
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

// The k best ids by ByLogitDesc, unordered. A bounded heap for small k (one pass, rare
// pushes), nth_element otherwise.
void SelectTopK(const std::vector<float>& x, size_t k, std::vector<int32_t>& ids) {
  const ByLogitDesc better{x.data()};
  const auto vocab = static_cast<int32_t>(x.size());
  ids.clear();
  if (k <= 4096) {
    // Heap ordered so the front is the worst kept id.
    for (int32_t i = 0; i < vocab; ++i) {
      if (ids.size() < k) {
        ids.push_back(i);
        std::push_heap(ids.begin(), ids.end(), better);
      } else if (better(i, ids.front())) {
        std::pop_heap(ids.begin(), ids.end(), better);
        ids.back() = i;
        std::push_heap(ids.begin(), ids.end(), better);
      }
    }
    return;
  }
  ids.resize(x.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::nth_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), better);
  ids.resize(k);
}

// Keeps the smallest prefix of `ids` in ByLogitDesc order whose weight reaches
// limit = top_p * (weight of ids): id j stays iff the weight before it is < limit. Weighted
// quickselect, O(n) expected, no full sort; the kept ids are left unordered.
void TruncateTopP(double top_p, const std::vector<float>& x, const std::vector<float>& w,
                  std::vector<int32_t>& ids) {
  const ByLogitDesc better{x.data()};
  double total = 0.0;
  for (int32_t id : ids) total += w[id];
  const double limit = top_p * total;
  auto lo = ids.begin();  // [begin, lo) is kept, with weight `cum`
  auto hi = ids.end();    // the boundary lies in [lo, hi)
  double cum = 0.0;
  while (hi - lo > 32) {
    // Median-of-three pivot, moved to the end of the range.
    auto mid = lo + (hi - lo) / 2;
    int32_t a = *lo, b = *mid, c = *(hi - 1);
    int32_t pivot = better(a, b) ? (better(b, c) ? b : (better(a, c) ? c : a))
                                 : (better(a, c) ? a : (better(b, c) ? c : b));
    std::iter_swap(std::find(lo, hi, pivot), hi - 1);
    auto split = std::partition(lo, hi - 1, [&](int32_t id) { return better(id, pivot); });
    std::iter_swap(split, hi - 1);  // pivot now at `split`, better ids before it
    double upper = 0.0;
    for (auto it = lo; it != split; ++it) upper += w[*it];
    if (cum + upper >= limit) {
      hi = split;
      continue;
    }
    cum += upper + w[pivot];
    lo = split + 1;
    if (cum >= limit) {
      hi = lo;
      break;
    }
  }
  std::sort(lo, hi, better);
  while (lo != hi && cum < limit) cum += w[*lo++];
  ids.resize(std::max<size_t>(static_cast<size_t>(lo - ids.begin()), 1));
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size) {
  if (!InRange(p.temperature, 0.0, 2.0)) return RangeError("temperature", p.temperature, "[0, 2]");
  if (p.top_k < 0) {
    return InvalidParam("top_k", absl::StrCat("top_k ", p.top_k, " must be >= 0 (0 = off)"));
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
    return InvalidParam("repetition_penalty",
                        absl::StrCat("repetition_penalty ", p.repetition_penalty,
                                     " must be finite and > 0 (1 = off)"));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs) {
    return InvalidParam("top_logprobs", absl::StrCat("top_logprobs ", p.top_logprobs,
                                                     " is outside [0, ", kMaxTopLogprobs, "]"));
  }
  if (p.top_logprobs > 0 && !p.logprobs) {
    return InvalidParam("top_logprobs", "top_logprobs requires logprobs to be true");
  }
  std::vector<int32_t> biased;
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return InvalidParam("logit_bias", absl::StrCat("logit_bias: token id ", id,
                                                     " is outside the vocabulary [0, ",
                                                     vocab_size, ")"));
    }
    if (!InRange(bias, -100.0, 100.0)) {
      return InvalidParam("logit_bias", absl::StrCat("logit_bias: the bias of token ", id, " (",
                                                     bias, ") is outside [-100, 100]"));
    }
    biased.push_back(id);
  }
  std::sort(biased.begin(), biased.end());
  if (std::adjacent_find(biased.begin(), biased.end()) != biased.end()) {
    return InvalidParam("logit_bias", "logit_bias: a token id appears twice");
  }
  for (int32_t t : p.stop_token_ids) {
    if (t < 0 || t >= vocab_size) {
      return InvalidParam("stop_token_ids", absl::StrCat("stop token id ", t,
                                                         " is outside the vocabulary [0, ",
                                                         vocab_size, ")"));
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

bool Sampler::IsArgmax() const {
  return params_.temperature == 0.0 && !params_.logprobs && params_.repetition_penalty == 1.0 &&
         params_.presence_penalty == 0.0 && params_.frequency_penalty == 0.0 &&
         params_.logit_bias.empty();
}

double Sampler::Uniform(uint64_t index) const {
  const uint64_t z = Mix(key_ + (index + 1) * kGolden);
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

SampleResult Sampler::Sample(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                             absl::Span<const int32_t> generated, uint64_t draw_index) {
  if (logits.empty()) return SampleResult{};  // contract violation; nothing to pick from
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
  const int32_t best = ArgmaxOf(x, vocab);
  const float max = x[best];
  // exp(x - max): the draw weights and the log-normaliser; greedy needs them only for logprobs.
  std::vector<float>& w = s.w;
  double total = 0.0;
  if (greedy && !params_.logprobs) {
    w.clear();
  } else if (std::isfinite(max)) {
    w.resize(x.size());
    for (int32_t i = 0; i < vocab; ++i) {
      w[i] = std::exp(x[i] - max);
      total += w[i];
    }
  } else {  // every token masked: report token 0 with -inf
    w.assign(x.size(), 0.0f);
  }
  // With every token masked, log_z = 0 makes every reported logprob -inf.
  const double log_z = std::isfinite(max) && total > 0.0 ? max + std::log(total) : 0.0;

  int32_t token = best;
  if (!greedy && std::isfinite(max)) {
    const double u = Uniform(draw_index);
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
      if (top_k) {
        SelectTopK(x, static_cast<size_t>(params_.top_k), ids);
      } else {
        ids.resize(x.size());
        std::iota(ids.begin(), ids.end(), 0);
      }
      if (top_p) TruncateTopP(params_.top_p, x, w, ids);
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
  if (params_.logprobs) result.logprob = static_cast<float>(x[token] - log_z);
  if (params_.logprobs && params_.top_logprobs > 0) {
    for (int32_t id : TopN(x, std::min(params_.top_logprobs, vocab))) {
      result.top_logprobs.push_back({id, static_cast<float>(x[id] - log_z)});
    }
  }
  return result;
}

SampleResult ScoreToken(absl::Span<const float> logits, int32_t token, int32_t top_n) {
  SampleResult result;
  result.token = token;
  if (logits.empty()) return result;  // contract violation; nothing to score
  const auto vocab = static_cast<int32_t>(logits.size());
  float max = logits[0];
  for (float v : logits) max = std::max(max, v);
  double total = 0.0;
  if (std::isfinite(max)) {
    for (float v : logits) total += std::exp(v - max);
  }
  // As in Sample: with every token masked, log_z = 0 makes every logprob -inf.
  const double log_z = std::isfinite(max) && total > 0.0 ? max + std::log(total) : 0.0;
  if (token >= 0 && token < vocab) {
    result.logprob = static_cast<float>(logits[token] - log_z);
    result.rank = 1 + std::count_if(logits.begin(), logits.end(),
                                    [&](float v) { return v > logits[token]; });
  } else {
    result.logprob = -std::numeric_limits<float>::infinity();
  }
  for (int32_t id : TopN(logits, std::min(top_n, vocab))) {
    result.top_logprobs.push_back({id, static_cast<float>(logits[id] - log_z)});
  }
  return result;
}

}  // namespace moeserve::engine
