#ifndef MOESERVE_GATEWAY_MODEL_CONTEXT_H_
#define MOESERVE_GATEWAY_MODEL_CONTEXT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template.h"
#include "engine/reasoning.h"
#include "engine/tokenizer.h"

namespace moeserve::gateway {

// Everything the gateway knows about the served model, read once at startup from a model
// folder (tokenizer.json, tokenizer_config.json with the chat template, config.json; no
// weights). Immutable after Load, so shared by every request thread without locks.
struct ModelContext {
  std::string name;            // the id clients put in "model"
  int64_t context_length = 0;  // config.json max_position_embeddings
  int32_t vocab_size = 0;      // the tokenizer's (ids >= this cannot be decoded)
  int32_t default_max_tokens = 0;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::optional<engine::ChatTemplate> chat_template;  // nullopt: chat requests fail (400)
  std::string bos_token;
  std::string eos_token;
  std::vector<int32_t> think_close_ids;          // "</think>\n\n" (empty without a <think> token)
  std::vector<std::string> special_token_texts;  // added tokens chat users may not write
  engine::ThinkingBudget thinking_budget;
  // API policy set by the server (GatewayConfig::reject_reasoner_logprobs), not read from the
  // folder: reject logprobs on chat requests whose prompt opens a thought.
  bool reject_reasoner_logprobs = false;

  // NotFound / InvalidArgument naming the file that is missing or malformed.
  static absl::StatusOr<std::unique_ptr<ModelContext>> Load(const std::string& model_dir,
                                                            const std::string& name,
                                                            int32_t default_max_tokens);
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_MODEL_CONTEXT_H_
