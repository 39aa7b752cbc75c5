#ifndef MOESERVE_GATEWAY_OPENAI_FORMAT_H_
#define MOESERVE_GATEWAY_OPENAI_FORMAT_H_

#include <cstdint>
#include <string>

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

// Identity of one response, shared by all its chunks.
struct ResponseMeta {
  std::string id;       // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
  Endpoint endpoint = Endpoint::kChat;
  bool split_reasoning = false;
  bool include_usage = false;
};

// "stop" | "length" | null (cancelled or unknown).
nlohmann::json FinishReasonJson(FinishReason reason);
nlohmann::json UsageJson(const UsageInfo& usage);

// The whole non-streaming response.
nlohmann::json CompletionResponseJson(const ResponseMeta& meta, const TextDelta& text,
                                      FinishReason finish, const UsageInfo& usage);
// The opening chunk of a chat stream (role only); completions have none.
nlohmann::json RoleChunkJson(const ResponseMeta& meta);
// A chunk with text.
nlohmann::json DeltaChunkJson(const ResponseMeta& meta, const TextDelta& delta);
// The chunk with the finish reason.
nlohmann::json FinishChunkJson(const ResponseMeta& meta, FinishReason finish);
// The usage chunk ("choices": []).
nlohmann::json UsageChunkJson(const ResponseMeta& meta, const UsageInfo& usage);

// "data: <json>\n\n".
std::string SseEvent(const nlohmann::json& event);
// "data: [DONE]\n\n".
std::string SseDone();
// JSON text; invalid UTF-8 is replaced rather than thrown on.
std::string DumpJson(const nlohmann::json& j);

nlohmann::json ModelsJson(const std::string& model, int64_t created, int64_t context_length);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_OPENAI_FORMAT_H_
