#ifndef MOESERVE_ENGINE_SAMPLER_H_
#define MOESERVE_ENGINE_SAMPLER_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moeserve::engine {

// Per-request sampling settings, in OpenAI / vLLM terms.
struct SamplingParams {
  // 0 = greedy. OpenAI range [0, 2].
  double temperature = 1.0;
  // Keep the k most likely tokens; 0 = off.
  int64_t top_k = 0;
  // Keep the smallest most-likely prefix whose mass reaches top_p; 1 = off. Range (0, 1].
  double top_p = 1.0;
  // Keep tokens with p >= min_p * p_max; 0 = off. Range [0, 1].
  double min_p = 0.0;
  // OpenAI semantics over the GENERATED tokens only:
  // logit -= presence_penalty * [count > 0] + frequency_penalty * count. Range [-2, 2].
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  // HF/CTRL semantics over prompt + generated tokens (each distinct id once):
  // logit > 0 -> logit / p, else logit * p. 1 = off; must be > 0.
  double repetition_penalty = 1.0;
  // OpenAI's logit_bias: added to the logit of each id (after the penalties, before the
  // temperature); -100 in practice bans a token, +100 forces it. Ids distinct and in the
  // vocabulary, biases in [-100, 100].
  std::vector<std::pair<int32_t, float>> logit_bias;
  // Generation stops after any of these ids (the stop token itself is emitted by the sampler;
  // the caller decides whether to show it).
  std::vector<int32_t> stop_token_ids;
  // Unset: the Sampler's default_seed is used.
  std::optional<uint64_t> seed;
  // Fill the chosen token's logprob and, if top_logprobs > 0, the top-N alternatives.
  bool logprobs = false;
  int32_t top_logprobs = 0;  // 0..20; > 0 requires logprobs
};

// InvalidArgument naming the offending field and its allowed range.
absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = 0;
  // log p(token) in the reported distribution (see Sampler). Filled when params.logprobs,
  // else 0 (greedy then skips the softmax pass entirely).
  float logprob = 0.0f;
  // The top_logprobs most likely tokens of the reported distribution, most likely first (ties:
  // lower id first). Empty unless params.logprobs && params.top_logprobs > 0.
  std::vector<TokenLogprob> top_logprobs;
  // ScoreToken only: 1 + the ids whose logit is larger than the token's (vLLM's rank); 0 when
  // not computed.
  int64_t rank = 0;
};

// Scores `token` under the model's own distribution, log_softmax(logits) with no penalty or
// temperature (how vLLM reports prompt logprobs): the token's logprob (-inf for an id outside
// the logits), its rank, and the top_n most likely tokens, most likely first (ties: lower id
// first).
SampleResult ScoreToken(absl::Span<const float> logits, int32_t token, int32_t top_n);

// Picks the next token of one request from its logits.
//
// Order of operations:
//   1. repetition_penalty (prompt + generated), then presence/frequency (generated) — vLLM's
//      order. Ids outside [0, vocab) in the histories are ignored. Then logit_bias.
//   2. temperature: logits / T (skipped when T == 0).
//   3. top-k, 4. top-p (over the distribution renormalised after top-k), 5. min-p, 6. draw.
// Cost per call is a few O(vocab) passes: top-k uses a bounded heap (k <= 4096) or
// nth_element; top-p a weighted quickselect (no full sort); min-p a threshold; draw a scan.
// Candidates are left unordered, so which token a given uniform maps to depends on that
// internal order — deterministic, but not "the i-th most likely".
// Greedy (T == 0) applies step 1 and picks the largest logit, lowest id on exact ties; it
// skips 3-5 (they never remove the argmax) and draws nothing.
//
// Reported logprobs are log_softmax of the logits after steps 1-2 (T == 0 counts as T == 1),
// BEFORE truncation — the processed distribution, as vLLM reports it — so a truncated-away
// token still has a finite logprob and the chosen token's logprob is not renormalised.
//
// Randomness is counter-based: draw number s of a request is a pure function of (seed, s),
// where s counts Sample() calls on this Sampler. A request's tokens therefore depend only on
// its own seed, logits and step, never on other requests in the batch or the call order
// between Samplers. One uniform is consumed per non-greedy call.
//
// Logits must not be NaN; -inf masks a token. Not thread-safe; one Sampler per request.
class Sampler {
 public:
  // `params` should have passed ValidateSamplingParams.
  Sampler(const SamplingParams& params, uint64_t default_seed);

  // `logits` has one entry per vocab id (non-empty). `prompt` and `generated` are the
  // request's token history, used only by the penalties.
  // The random draw is number generated.size() of this request's stream.
  SampleResult Sample(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                      absl::Span<const int32_t> generated) {
    return Sample(logits, prompt, generated, generated.size());
  }
  // As above with an explicit draw index (tests drawing many samples from one distribution).
  SampleResult Sample(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                      absl::Span<const int32_t> generated, uint64_t draw_index);

  bool IsStop(int32_t token) const;
  // Whether Sample always returns the first argmax of the logits it is given and nothing else
  // (greedy, no penalty, no bias, no logprobs): the caller may then ask for the argmax alone
  // (Engine::SetArgmax) and skip Sample.
  bool IsArgmax() const;

  const SamplingParams& params() const { return params_; }

 private:
  // Uniform in [0, 1) for the draw of token number `index` of the generation. The draw depends
  // only on the seed and how many tokens were generated before it, so a request that is
  // recomputed or migrated to another worker with its generated tokens draws the same values.
  double Uniform(uint64_t index) const;

  SamplingParams params_;
  uint64_t key_;  // mixed seed
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_SAMPLER_H_
