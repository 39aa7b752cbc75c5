#ifndef MOESERVE_WORKER_JOB_H_
#define MOESERVE_WORKER_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/grammar/tool_call_constraint.h"
#include "engine/sampler.h"

namespace moeserve::worker {

enum class Finish { kNone, kStop, kLength, kCancelled };

// A forced tool call (moeserve.v1.ToolCallGrammar), exclusive with JobSpec::response_schema.
using engine::grammar::ToolCallSpec;

// One generation request, as moeserve.v1.GenerationSpec describes it.
struct JobSpec {
  std::string request_id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;  // already produced elsewhere (resume / migration)
  engine::SamplingParams sampling;
  int64_t max_new_tokens = 16;     // counting `generated`
  bool ignore_eos = false;
  int64_t thinking_budget = -1;    // -1: none
  std::vector<int32_t> think_close_ids;
  int64_t sample_vocab = 0;        // > 0: sample only ids below it
  bool prefill_only = false;       // stop after the first token and publish the prompt's blocks
  std::string response_schema;     // non-empty: the answer is JSON matching this schema
  std::optional<int32_t> constraint_after_token;  // the constraint starts after this token
  std::optional<ToolCallSpec> tool_calls;  // set: the answer is forced tool calls
  // Set: score the prompt with this many alternatives (0..20); every prompt position runs (no
  // cached prefix is imported) and the first event carries JobEvent::prompt_logprobs.
  std::optional<int32_t> prompt_logprobs;
  // EOS and the sampler's stop ids are masked until `generated` holds this many tokens.
  int64_t min_tokens = 0;
};

// What a job produced since the last event. The first event carries cached_tokens.
struct JobEvent {
  std::vector<int32_t> tokens;
  // One per token when asked for (tokens and logprobs stay aligned, so the router can relay
  // them together). A token the thinking budget forced was not sampled: ForcedToken(id).
  std::vector<engine::SampleResult> logprobs;
  Finish finish = Finish::kNone;
  int64_t cached_tokens = -1;  // set on the first event: tokens whose KV came from the cache
  int64_t published_blocks = 0;
  // The first event, with JobSpec::prompt_logprobs: entry i scores prompt token i + 1 under the
  // model's own distribution (engine::ScoreToken).
  std::vector<engine::SampleResult> prompt_logprobs;
  // With sampling.logprobs, when a sampled EOS or stop token id ended the job (it is not in
  // `tokens`): that token's logprob.
  std::optional<engine::SampleResult> stop_logprob;
  absl::Status error;          // non-OK ends the job
  bool done = false;           // the job's last event (after it, nothing more is delivered)
};

// The logprob entry of a token appended without sampling (the thinking budget's close): the
// sequence had it with certainty, so log p = 0 and there are no alternatives.
inline engine::SampleResult ForcedToken(int32_t token) {
  engine::SampleResult r;
  r.token = token;
  return r;
}

// Receives a job's events on the engine thread; must not block.
class JobSink {
 public:
  virtual ~JobSink() = default;
  virtual void OnEvent(JobEvent event) = 0;
};

// Shared between the submitter and the engine loop: cancellation travels through it.
struct JobControl {
  std::atomic<bool> cancelled{false};
};

}  // namespace moeserve::worker

#endif  // MOESERVE_WORKER_JOB_H_
