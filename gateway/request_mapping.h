#ifndef MOESERVE_GATEWAY_REQUEST_MAPPING_H_
#define MOESERVE_GATEWAY_REQUEST_MAPPING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/sampler.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "gateway/output_assembler.h"
#include "gateway/tool_calls.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

// Pure request mapping (no I/O): OpenAI JSON (or the gRPC Inference request) -> ApiRequest
// (types checked) -> PreparedRequest (semantics checked against the model, prompt tokenized,
// GenerationRequest built). See the comment at the top of request_mapping.cc for every choice.
// Every error is InvalidArgument (HTTP 400) except an unknown model (NotFound, 404); errors carry
// the offending field as the "param" payload of common/http_status.h.

enum class Endpoint { kChat, kCompletion };

// A tool call of an earlier assistant message, sent back by the client.
struct ToolCallInput {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text, rendered as given
};

struct ChatMessageInput {
  std::string role;
  std::string content;
  std::vector<ToolCallInput> tool_calls;  // assistant
  std::string tool_call_id;               // tool
  // DeepSeek's chat prefix completion: the last message, an assistant's, that the model
  // continues (see beta_prompts.h), with reasoning_content as the start of its thought.
  bool prefix = false;
  // On the prefix message: the start of the thought. On an assistant message that called tools
  // in the current turn (after the last user message) of a reasoning model: required, and given
  // to the template as the message's "reasoning_content". Elsewhere ignored.
  std::optional<std::string> reasoning_content;
};

// One prompt of a completions request that sends several (OpenAI's batched "prompt").
struct ApiPrompt {
  std::optional<std::string> text;
  std::optional<std::vector<int64_t>> ids;
};

struct ApiRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;
  std::vector<ChatMessageInput> messages;          // chat
  std::optional<std::string> prompt_text;          // completion
  std::optional<std::string> suffix;               // completion: fill-in-the-middle
  std::optional<std::vector<int64_t>> prompt_ids;  // completion (or gRPC prompt_ids)
  // Completions with several prompts (a list of strings or of token-id lists): each runs as
  // its own generation (see PrepareBatch); prompt_text / prompt_ids are then unset.
  std::vector<ApiPrompt> prompt_batch;
  bool echo = false;                               // completion: the text starts with the prompt
  // Score the prompt with 0..20 alternatives: gRPC's field, or vLLM's HTTP "prompt_logprobs",
  // which also sets show_prompt_logprobs (the response carries them in vLLM's shape).
  std::optional<int32_t> prompt_logprobs;
  bool show_prompt_logprobs = false;
  bool stream = false;
  bool include_usage = false;
  std::optional<int64_t> max_tokens;
  engine::SamplingParams sampling;
  std::vector<std::string> stop;
  std::optional<std::string> reasoning_effort;
  bool ignore_eos = false;
  int64_t min_tokens = 0;  // vLLM's: no EOS or stop token id before this many tokens
  int n = 1;         // choices
  int32_t priority = 0;  // lower runs first (vLLM's convention), in [-kMaxPriority, kMaxPriority]
  std::string user;  // accepted and type-checked; not used for anything yet
  std::vector<std::pair<std::string, std::string>> metadata;  // likewise
  std::string response_schema;  // chat "response_format" as a JSON schema; "" = free text
  ToolsRequest tools;           // chat "tools", "tool_choice", "parallel_tool_calls"
};

struct PreparedRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;
  GenerationRequest generation;
  bool stream = false;
  bool include_usage = false;
  std::vector<std::string> stop;
  bool split_reasoning = false;      // chat: split <think> ... </think> into reasoning_content
  bool starts_in_reasoning = false;  // the rendered prompt ends "<think>\n"
  bool parse_tool_calls = false;     // chat with tools: tool-call markup in the answer -> tool_calls
  int32_t prompt_tokens = 0;
  int n = 1;  // choices
  // Completions' echo: the text each choice starts with (OutputAssembler::Echo), and whether
  // max_tokens was 0 (the prompt is only scored; the cluster still makes one token, dropped).
  std::optional<std::string> echo_text;
  bool score_only = false;
};

// Bound of a request's "priority" (and of a key tier's).
inline constexpr int32_t kMaxPriority = 1000;

// Most ids one request's "stop_token_ids" may hold.
inline constexpr size_t kMaxStopTokenIds = 64;

// Most tokens one request's "logit_bias" may name.
inline constexpr size_t kMaxLogitBias = 1024;

// Most choices ("n") one request may ask for.
inline constexpr int kMaxChoices = 16;

// Most prompts one completions request may batch, and most choices (prompts x n) in all.
inline constexpr int kMaxBatchPrompts = 128;

// Largest request body the HTTP server reads.
inline constexpr size_t kMaxBodyBytes = size_t{8} << 20;

// 404 model_not_found (param "model") for a model this server does not serve.
absl::Status ModelNotFound(absl::string_view requested, const ModelContext& model);

absl::StatusOr<ApiRequest> ParseChatCompletionRequest(absl::string_view body);
absl::StatusOr<ApiRequest> ParseCompletionRequest(absl::string_view body);

// Validates against the model and tokenizes. `request_id` goes into the GenerationRequest.
absl::StatusOr<PreparedRequest> PrepareRequest(const ApiRequest& request, const ModelContext& model,
                                               const std::string& request_id);

// PrepareRequest for each prompt of a batched completions request (request ids "<id>-p<i>"), in
// order; a request of one prompt gives one. A bad prompt fails the whole request, its error
// naming the prompt.
absl::StatusOr<std::vector<PreparedRequest>> PrepareBatch(const ApiRequest& request,
                                                          const ModelContext& model,
                                                          const std::string& request_id);

// The assembler of one choice of `p`'s response (reasoning split, stop strings, tool calls and
// the echo as `p` asks).
OutputAssembler MakeOutputAssembler(const engine::Tokenizer& tokenizer, const PreparedRequest& p);

// The request of choice `index` (0-based) of a request with several choices: choice 0 is
// `first` itself; choice i > 0 has request id "<id>-<i>" and, when `first` has a seed, the seed
// mixed with i (SplitMix64), so choices draw different tokens, reproducibly. Without a seed the
// distinct request ids give distinct draws (the worker seeds from the id).
GenerationRequest ChoiceRequest(const GenerationRequest& first, int index);

// True when `text` is well-formed UTF-8.
bool IsValidUtf8(absl::string_view text);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_REQUEST_MAPPING_H_
