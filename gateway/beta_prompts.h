#ifndef MOESERVE_GATEWAY_BETA_PROMPTS_H_
#define MOESERVE_GATEWAY_BETA_PROMPTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/model_context.h"
#include "gateway/request_mapping.h"

namespace moeserve::gateway {

// DeepSeek's beta prompt forms (api.deepseek.com/beta). Pure; errors are InvalidArgument with
// the offending field as the "param" payload (HTTP 400).

// Fill-in-the-middle: BOS (when tokenizer_config.json adds one), <｜fim▁begin｜>, the prompt,
// <｜fim▁hole｜>, the suffix, <｜fim▁end｜>; the model writes the middle. The texts are encoded
// without recognising special tokens and may not contain any added token's text (they would
// break the layout). InvalidArgument when the tokenizer lacks the three FIM tokens.
absl::StatusOr<std::vector<int32_t>> EncodeFimPrompt(const ModelContext& model,
                                                     const std::string& prompt,
                                                     const std::string& suffix);

// Chat prefix completion: `rendered` is the chat template's output for the messages before the
// prefix message, with the generation prompt; the model continues `prefix` (the last message,
// role assistant, "prefix": true). When the generation prompt opens a thought ("<think>\n"):
// with empty content the thought continues from reasoning_content (the output starts in
// reasoning); with content the thought is closed after reasoning_content (empty if absent) as
// "\n</think>\n\n" and the answer continues from content. Without an opened thought only
// content is appended, and reasoning_content is rejected. `*starts_in_reasoning` says whether
// the output begins inside the thought. `index` names the message in errors.
absl::StatusOr<std::string> AppendAssistantPrefix(const std::string& rendered,
                                                  const ChatMessageInput& prefix, size_t index,
                                                  bool* starts_in_reasoning);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_BETA_PROMPTS_H_
