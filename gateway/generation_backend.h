#ifndef MOESERVE_GATEWAY_GENERATION_BACKEND_H_
#define MOESERVE_GATEWAY_GENERATION_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/grammar/tool_call_constraint.h"
#include "engine/sampler.h"

namespace moeserve::gateway {

// A forced tool call as token ids (moeserve.v1.ToolCallGrammar); see engine/grammar.
using ToolCallGrammarIds = engine::grammar::ToolCallSpec;

// What the gateway asks the cluster to generate (moeserve.v1.GenerationSpec as a domain struct).
struct GenerationRequest {
  std::string request_id;
  std::vector<int32_t> prompt_ids;  // used exactly as given
  engine::SamplingParams sampling;
  int32_t max_new_tokens = 0;
  bool ignore_eos = false;
  int32_t min_tokens = 0;  // vLLM's: no EOS or stop token id before this many tokens
  int32_t thinking_budget = -1;  // -1: none; else close reasoning after that many tokens
  std::vector<int32_t> think_close_ids;
  int32_t sample_vocab = 0;  // > 0: sample only ids below this
  std::string response_schema;                   // non-empty: the answer is JSON matching it
  std::optional<int32_t> constraint_after_token;  // the constraint starts after this token
  std::optional<ToolCallGrammarIds> tool_calls;   // set: the answer is forced tool calls
  // Set: the first chunk scores the prompt with this many alternatives (GenerationSpec's
  // prompt_logprobs); the prompt then runs whole, without the prefix cache.
  std::optional<int32_t> prompt_logprobs;
  int32_t priority = 0;      // the router's queue order: lower first (RouteRequest.priority)
  // The client's deadline (gRPC deadline, HTTP X-Request-Timeout), passed on to the router and
  // from there to the workers; past it the generation ends with DEADLINE_EXCEEDED.
  absl::Time deadline = absl::InfiniteFuture();
};

// kToolCalls: the answer ended after calling tools (decided by the gateway, never a backend).
enum class FinishReason { kNone, kStop, kLength, kCancelled, kToolCalls };

// One piece of the token stream.
struct GenerationChunk {
  std::vector<int32_t> token_ids;
  // One per token id when the request asked for logprobs, else empty. A token the worker
  // forced (the thinking budget's close) has logprob 0 and no alternatives.
  std::vector<engine::SampleResult> logprobs;
  FinishReason finish_reason = FinishReason::kNone;  // set on the last chunk
  int32_t cached_prompt_tokens = 0;                  // meaningful on the first chunk
  // First chunk, with GenerationRequest::prompt_logprobs: entry i scores prompt token i + 1.
  std::vector<engine::SampleResult> prompt_logprobs;
  // Last chunk, with logprobs, when a sampled EOS or stop token id ended the generation (it is
  // not in token_ids): its logprob.
  std::optional<engine::SampleResult> stop_logprob;
};

// Callbacks of one generation. They are invoked serially (never two at once) from a thread the
// backend owns, must not block, and must not call back into the backend except Cancel().
// on_chunk may run any number of times; on_done runs exactly once, last: OK after the chunk
// carrying the finish reason, Cancelled after Cancel(), or the backend's error.
struct GenerationCallbacks {
  std::function<void(GenerationChunk)> on_chunk;
  std::function<void(absl::Status)> on_done;
};

// A generation in progress. Cancel() is thread-safe, idempotent, and safe after on_done.
class GenerationCall {
 public:
  virtual ~GenerationCall() = default;
  virtual void Cancel() = 0;
};
using GenerationCallPtr = std::shared_ptr<GenerationCall>;

// Where tokens come from: the router over gRPC (RouterBackend) or a fake in tests.
// Start() never blocks on the generation; the callbacks may run before Start returns.
// The backend keeps the call alive until on_done has run, whether or not the caller keeps the
// returned handle. Thread-safe.
class GenerationBackend {
 public:
  virtual ~GenerationBackend() = default;
  virtual GenerationCallPtr Start(GenerationRequest request, GenerationCallbacks callbacks) = 0;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_GENERATION_BACKEND_H_
