#ifndef MOESERVE_GATEWAY_OPENAI_FORMAT_H_
#define MOESERVE_GATEWAY_OPENAI_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "engine/tokenizer.h"
#include "gateway/generation_backend.h"
#include "gateway/output_assembler.h"
#include "gateway/request_mapping.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

// OpenAI / DeepSeek response bodies and SSE framing. Pure functions.
//
// Chat: message {"role":"assistant","content","reasoning_content"} (reasoning_content only when
// the request split reasoning). Streams: a first chunk with delta {"role":"assistant",
// "content":""}; then deltas with "reasoning_content" and/or "content"; a last chunk with an
// empty delta and finish_reason; with include_usage every chunk has "usage": null and a final
// chunk with "choices": [] carries the usage; then "data: [DONE]".
// Usage: prompt_tokens, completion_tokens, total_tokens, prompt_cache_hit_tokens,
// prompt_cache_miss_tokens, prompt_tokens_details.cached_tokens,
// completion_tokens_details.reasoning_tokens.
// Several choices (n > 1): every choice and chunk carries its "index"; streams interleave the
// choices' chunks, each choice ends with its own finish chunk.
// Logprobs (null unless asked for). Chat: {"content": [{"token", "logprob", "bytes",
// "top_logprobs": [{"token", "logprob", "bytes"}]}], "refusal": null}, plus
// "reasoning_content": [...] (same entries, for the reasoning tokens) when the request splits
// reasoning. Completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}],
// "text_offset"}. A token's "token" is its text when its bytes are valid UTF-8, else
// "bytes:\xe4\xbd" (its bytes escaped; "bytes" always has them exactly).

// Identity of one response, shared by all its chunks.
struct ResponseMeta {
  std::string id;       // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
  Endpoint endpoint = Endpoint::kChat;
  bool split_reasoning = false;
  bool include_usage = false;
  bool logprobs = false;
};

// One choice of a non-streaming response.
struct ChoiceResult {
  TextDelta text;
  FinishReason finish = FinishReason::kNone;
};

// "stop" | "length" | null (cancelled or unknown).
nlohmann::json FinishReasonJson(FinishReason reason);
nlohmann::json UsageJson(const UsageInfo& usage);

// The whole non-streaming response (one choice, or several in index order).
nlohmann::json CompletionResponseJson(const ResponseMeta& meta, const TextDelta& text,
                                      FinishReason finish, const UsageInfo& usage);
nlohmann::json CompletionResponseJson(const ResponseMeta& meta,
                                      const std::vector<ChoiceResult>& choices,
                                      const UsageInfo& usage);
// The opening chunk of a chat stream (role only) for choice `index`; completions have none.
nlohmann::json RoleChunkJson(const ResponseMeta& meta, int index = 0);
// A chunk with text and/or logprobs.
nlohmann::json DeltaChunkJson(const ResponseMeta& meta, const TextDelta& delta, int index = 0);
// The chunk with the finish reason.
nlohmann::json FinishChunkJson(const ResponseMeta& meta, FinishReason finish, int index = 0);
// The "logprobs" member of a choice for the tokens behind `delta` (null when not asked for).
nlohmann::json LogprobsJson(const ResponseMeta& meta, const TextDelta& delta);
// A token's "token" string (see above).
std::string TokenString(const std::string& bytes);
// The usage chunk ("choices": []).
nlohmann::json UsageChunkJson(const ResponseMeta& meta, const UsageInfo& usage);

// "data: <json>\n\n".
std::string SseEvent(const nlohmann::json& event);
// "data: [DONE]\n\n".
std::string SseDone();
// vLLM's prompt_logprobs: null for the first prompt token, then for each later one an object
// keyed by token id (as a string) holding {"logprob", "rank", "decoded_token"} for the token
// itself and for each alternative (ranked 1, 2, ...). `scores[i]` scores ids[i + 1]; a missing
// score is null.
nlohmann::json PromptLogprobsJson(absl::Span<const int32_t> ids,
                                  absl::Span<const engine::SampleResult> scores,
                                  const engine::Tokenizer& tokenizer);

// JSON text; invalid UTF-8 is replaced rather than thrown on.
std::string DumpJson(const nlohmann::json& j);

nlohmann::json ModelsJson(const std::string& model, int64_t created, int64_t context_length);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_OPENAI_FORMAT_H_
