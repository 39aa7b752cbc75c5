#ifndef MOESERVE_GATEWAY_TOKENIZE_API_H_
#define MOESERVE_GATEWAY_TOKENIZE_API_H_

// vLLM's token-counting routes, for clients that size prompts before sending them:
//
//   POST /tokenize    {"prompt": TEXT, "add_special_tokens": true}
//                  or {"messages": [...], (tools, reasoning_effort, ... as a chat request)}
//                  -> {"count": N, "max_model_len": L, "tokens": [ids], "token_strs": null}
//   POST /detokenize  {"tokens": [ids]} -> {"prompt": TEXT}
//
// "model" is optional; another model's name is 404 model_not_found. A prompt is encoded as the
// tokenizer does (special-token text recognised; BOS per tokenizer_config.json unless
// add_special_tokens is false). Messages are prepared exactly as /v1/chat/completions prepares
// them (template, generation prompt, thinking, tools, prefix), so "count" is the prompt_tokens
// that request would be billed; "add_generation_prompt": false is refused, since a chat request
// always opens the assistant's turn. "return_token_strs": true fills token_strs with the
// tokenizer's pieces (tokenizer.json's vocabulary strings). Errors are InvalidArgument naming
// the field (HTTP 400).

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gateway/model_context.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

absl::StatusOr<nlohmann::ordered_json> TokenizeResponse(absl::string_view body,
                                                        const ModelContext& model);
absl::StatusOr<nlohmann::ordered_json> DetokenizeResponse(absl::string_view body,
                                                          const ModelContext& model);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_TOKENIZE_API_H_
