// Request mapping: OpenAI / DeepSeek API requests -> GenerationRequest. The choices made here:
//
// Parsing (ParseChatCompletionRequest / ParseCompletionRequest):
//  - The body must be a JSON object. Invalid UTF-8 anywhere in the body is reported as such
//    (400 "not valid UTF-8"); other syntax errors as "not valid JSON". Unknown fields are
//    ignored, as OpenAI does. JSON null counts as absent for every optional field.
//  - DeepSeek beta (also served under /beta/...): "suffix" (completions, with a text prompt)
//    makes a fill-in-the-middle prompt (EncodeFimPrompt; the prompt may then be empty);
//    "prefix": true on the last message, an assistant's, makes the model continue it, with
//    "reasoning_content" as the start of the thought on reasoning models
//    (AppendAssistantPrefix). The response holds only the continuation. Accepted under /v1 too.
//    reasoning_content on other messages is type-checked and ignored.
//  - "model": required string. "messages" (chat): non-empty array of objects with "role" in
//    system | user | assistant | tool | developer ("developer" is treated as "system") and
//    "content" either a string or an array of {"type":"text","text":...} parts, joined with
//    "\n". Other part types (images, audio) are rejected. An assistant message may have null
//    content (it then renders as empty).
//  - "prompt" (completions): a string, an array of token ids (integers), or a batch: an array of
//    strings or of token-id arrays (at most kMaxBatchPrompts, and prompts x n within it too; a
//    batch of one is that prompt). Each prompt of a batch runs as its own generation
//    (PrepareBatch); choice i * n + j is prompt i's choice j, as OpenAI numbers them, and usage
//    sums every prompt's tokens. The Batch API and the gRPC API take one prompt.
//    "best_of" > 1 is rejected. "echo": true starts each choice's text with the prompt (token-id
//    prompts decoded, special tokens skipped); with "logprobs" the prompt's tokens come first in
//    the logprobs, the first with null logprob and top_logprobs (OpenAI's legacy form, which
//    lm-evaluation-harness reads), scored under the model's raw distribution. Such a prompt runs
//    whole (no prefix-cache hit). With echo, "max_tokens": 0 only scores the prompt (the
//    finish_reason is "length"). "echo" with "suffix" is rejected.
//  - "n": 1..16 choices (OpenAI allows 128; 16 bounds the work one request can ask for). Each
//    choice is its own generation (ChoiceRequest: distinct id and derived seed); max_tokens
//    applies per choice; usage counts the prompt once and the completion tokens of all.
//  - Integers must be JSON integers (1.0 and "1" are rejected). "max_completion_tokens" is an
//    alias of "max_tokens" (OpenAI's newer name); both may be given only when equal, else 400
//    (a silent winner would hide a client bug). max_tokens >= 1 (0 with completions' echo).
//  - "user" (a string), "metadata" (at most 16 string values, keys <= 64 and values <= 512
//    characters, OpenAI's limits) and "store" (a boolean) are type-checked and otherwise
//    unused. messages[i].name must be a string when given (it is not rendered).
//  - Sampling: temperature [0, 2] (default 1, OpenAI's), top_p (0, 1], top_k >= 0 (an
//    extension, 0 = off), min_p [0, 1], presence/frequency_penalty [-2, 2],
//    repetition_penalty > 0, seed a non-negative integer. logprobs bool, top_logprobs 0..20 and
//    only with logprobs (the ranges of engine::ValidateSamplingParams). "logit_bias": OpenAI's
//    object of token ids (decimal strings) to biases in [-100, 100], at most kMaxLogitBias of
//    them, each id in the tokenizer's vocabulary; added to the logits before sampling.
//  - "stop": a string or a list of at most 4 non-empty strings. Stop strings apply to the answer
//    text (content), never to reasoning_content; the output is cut before the stop string and
//    finish_reason is "stop".
//  - "stream_options" only with "stream": true (OpenAI's rule); include_usage adds the usage
//    chunk (choices: []) before [DONE].
//  - "reasoning_effort": low | medium | high. With a template that opens <think> it becomes the
//    thinking budget (engine::ThinkingBudget); with other templates it is validated and ignored.
//  - vLLM's "prompt_logprobs" (0..20, non-streaming only, not with echo + logprobs): the
//    response carries each prompt token's logprob, rank and that many alternatives
//    (PromptLogprobsJson); the prompt runs whole, without the prefix cache.
//  - "ignore_eos": bool (an extension, as in vLLM). vLLM's "min_tokens" (0..max_tokens: no EOS
//    or stop token id before that many tokens) and "stop_token_ids" (at most kMaxStopTokenIds
//    ids of the vocabulary: generation stops after one, which is not shown, as EOS is not).
//
// Preparing (PrepareRequest):
//  - An unknown "model" is 404 model_not_found. The gateway serves exactly one model.
//  - Chat: the model's own chat template renders the messages with add_generation_prompt, then
//    the text is encoded without adding BOS (the template wrote it). Users must not forge
//    control tokens: message content containing the text of an added token (e.g. "<｜User｜>",
//    which the tokenizer would match even with parse_special_tokens=false because DeepSeek marks
//    it non-special) is rejected with 400 rather than silently re-tokenized. R1's <think> and
//    </think> stay allowed. TODO(gateway): encode content spans with parse_special_tokens=false
//    instead of rejecting.
//  - Completions: prompt text is encoded with BOS as tokenizer_config.json asks and with
//    parse_special_tokens=false (so BOS/EOS text is not a token). The chat markers, which
//    DeepSeek's tokenizer marks non-special, are still recognised: /v1/completions is the raw
//    interface (its token-id form can send any id anyway). Token-id prompts are used exactly as
//    given, and every id must be in [0, vocab_size) of the tokenizer (ids a client cannot decode
//    are rejected).
//  - Context: prompt_tokens must be < context_length; an explicit max_tokens must be
//    <= context_length and prompt + max_tokens <= context_length (400
//    context_length_exceeded). Without max_tokens: min(--max-tokens-default, room left).
//  - Logprobs with a reasoning model: served (reasoning tokens' entries go to the extension
//    logprobs.reasoning_content), unless the server runs with --reject-logprobs-for-reasoner,
//    which answers 400 (param "logprobs") for chat requests whose prompt opens <think>, as
//    DeepSeek's API does for deepseek-reasoner.
//  - sample_vocab is the tokenizer's vocab size (the model's embedding has padding rows).
//  - Chat output is split into reasoning_content/content when the template opens <think>
//    (starts_in_reasoning) or the model writes <think> first; completions are never split.
#include "gateway/request_mapping.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/http_status.h"
#include "common/status_macros.h"
#include "gateway/beta_prompts.h"
#include "gateway/response_format.h"

namespace moeserve::gateway {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(absl::string_view param, absl::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(message), param);
}

absl::StatusOr<Json> ParseBody(absl::string_view body) {
  if (!IsValidUtf8(body)) return absl::InvalidArgumentError("request body is not valid UTF-8");
  Json j = Json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded()) {
    // nlohmann also rejects escaped lone surrogates ("\ud800") here.
    return absl::InvalidArgumentError("request body is not valid JSON");
  }
  if (!j.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return j;
}

// The member `name`, or null when absent.
const Json* Field(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<bool>> GetBool(const Json& j, const char* name) {
  const Json* v = Field(j, name);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return Invalid(name, absl::StrCat("'", name, "' must be a boolean"));
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<int64_t>> GetInt(const Json& j, const char* name) {
  const Json* v = Field(j, name);
  if (v == nullptr) return std::optional<int64_t>();
  if (v->is_number_unsigned()) {
    if (v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(name, absl::StrCat("'", name, "' is out of range"));
    }
    return std::optional<int64_t>(static_cast<int64_t>(v->get<uint64_t>()));
  }
  if (!v->is_number_integer()) {
    return Invalid(name, absl::StrCat("'", name, "' must be an integer"));
  }
  return std::optional<int64_t>(v->get<int64_t>());
}

absl::StatusOr<std::optional<double>> GetNumber(const Json& j, const char* name) {
  const Json* v = Field(j, name);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return Invalid(name, absl::StrCat("'", name, "' must be a number"));
  return std::optional<double>(v->get<double>());
}

absl::Status CheckRange(const char* name, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) {
    return Invalid(name, absl::StrCat("'", name, "' must be in [", lo, ", ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

// Fields shared by both endpoints.
absl::Status ParseCommon(const Json& j, ApiRequest* r) {
  const Json* model = Field(j, "model");
  if (model == nullptr) return Invalid("model", "'model' is required");
  if (!model->is_string()) return Invalid("model", "'model' must be a string");
  r->model = model->get<std::string>();

  MOESERVE_ASSIGN_OR_RETURN(std::optional<bool> stream, GetBool(j, "stream"));
  r->stream = stream.value_or(false);
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> prompt_logprobs, GetInt(j, "prompt_logprobs"));
  if (prompt_logprobs) {
    if (*prompt_logprobs < 0 || *prompt_logprobs > 20) {
      return Invalid("prompt_logprobs", "'prompt_logprobs' must be in [0, 20]");
    }
    if (r->stream) {
      return Invalid("prompt_logprobs",
                     "'prompt_logprobs' is returned in non-streaming responses only");
    }
    r->prompt_logprobs = static_cast<int32_t>(*prompt_logprobs);
    r->show_prompt_logprobs = true;
  }
  if (const Json* so = Field(j, "stream_options")) {
    if (!so->is_object()) return Invalid("stream_options", "'stream_options' must be an object");
    if (!r->stream) {
      return Invalid("stream_options", "'stream_options' is only allowed when 'stream' is true");
    }
    if (const Json* usage = Field(*so, "include_usage")) {
      if (!usage->is_boolean()) {
        return Invalid("stream_options.include_usage",
                       "'stream_options.include_usage' must be a boolean");
      }
      r->include_usage = usage->get<bool>();
    }
  }

  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens, GetInt(j, "max_tokens"));
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> max_completion,
                            GetInt(j, "max_completion_tokens"));
  if (max_tokens && max_completion && *max_tokens != *max_completion) {
    return Invalid(
        "max_completion_tokens",
        absl::StrCat("'max_completion_tokens' (", *max_completion, ") and 'max_tokens' (",
                     *max_tokens, ") disagree; give one of them (they are aliases)"));
  }
  const char* max_name = max_completion ? "max_completion_tokens" : "max_tokens";
  r->max_tokens = max_completion ? max_completion : max_tokens;
  // 0 only scores the prompt, which makes sense only when the completion echoes it.
  const bool completion = r->endpoint == Endpoint::kCompletion;
  const bool echo = completion && r->echo;
  if (r->max_tokens && *r->max_tokens < (echo ? 0 : 1)) {
    return Invalid(max_name, absl::StrCat("'", max_name, "' must be at least ", echo ? 0 : 1,
                                          ", got ", *r->max_tokens,
                                          completion && !echo ? " (0 is allowed with 'echo': true)"
                                                              : ""));
  }

  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> n, GetInt(j, "n"));
  if (n && (*n < 1 || *n > kMaxChoices)) {
    return Invalid("n", absl::StrCat("'n' must be in [1, ", kMaxChoices, "], got ", *n));
  }
  r->n = static_cast<int>(n.value_or(1));

  // vLLM's request priority: lower values are scheduled first. An API key's tier may raise it
  // (HttpSession), never lower it.
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> priority, GetInt(j, "priority"));
  if (priority && (*priority < -kMaxPriority || *priority > kMaxPriority)) {
    return Invalid("priority", absl::StrCat("'priority' must be in [", -kMaxPriority, ", ",
                                            kMaxPriority, "], got ", *priority));
  }
  r->priority = static_cast<int32_t>(priority.value_or(0));

  engine::SamplingParams& s = r->sampling;
  s.temperature = 1.0;
  MOESERVE_ASSIGN_OR_RETURN(std::optional<double> temperature, GetNumber(j, "temperature"));
  if (temperature) {
    MOESERVE_RETURN_IF_ERROR(CheckRange("temperature", *temperature, 0, 2));
    s.temperature = *temperature;
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<double> top_p, GetNumber(j, "top_p"));
  if (top_p) {
    if (!(*top_p > 0 && *top_p <= 1)) {
      return Invalid("top_p", absl::StrCat("'top_p' must be in (0, 1], got ", *top_p));
    }
    s.top_p = *top_p;
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> top_k, GetInt(j, "top_k"));
  if (top_k) {
    if (*top_k < 0) return Invalid("top_k", "'top_k' must be >= 0");
    s.top_k = *top_k;
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<double> min_p, GetNumber(j, "min_p"));
  if (min_p) {
    MOESERVE_RETURN_IF_ERROR(CheckRange("min_p", *min_p, 0, 1));
    s.min_p = *min_p;
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<double> presence, GetNumber(j, "presence_penalty"));
  if (presence) {
    MOESERVE_RETURN_IF_ERROR(CheckRange("presence_penalty", *presence, -2, 2));
    s.presence_penalty = *presence;
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<double> frequency, GetNumber(j, "frequency_penalty"));
  if (frequency) {
    MOESERVE_RETURN_IF_ERROR(CheckRange("frequency_penalty", *frequency, -2, 2));
    s.frequency_penalty = *frequency;
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<double> repetition, GetNumber(j, "repetition_penalty"));
  if (repetition) {
    if (!(*repetition > 0))
      return Invalid("repetition_penalty", "'repetition_penalty' must be > 0");
    s.repetition_penalty = *repetition;
  }
  if (const Json* bias = Field(j, "logit_bias")) {
    // OpenAI's shape: {"<token id>": bias, ...}, biases in [-100, 100].
    if (!bias->is_object()) {
      return Invalid("logit_bias", "'logit_bias' must be an object of token ids to biases");
    }
    if (bias->size() > kMaxLogitBias) {
      return Invalid("logit_bias", absl::StrCat("'logit_bias' may hold at most ", kMaxLogitBias,
                                                " tokens"));
    }
    for (const auto& [key, value] : bias->items()) {
      int64_t id = -1;
      if (!absl::SimpleAtoi(key, &id) || id < 0 || id > INT32_MAX || absl::StrCat(id) != key) {
        return Invalid("logit_bias",
                       absl::StrCat("'logit_bias' keys must be token ids, got '", key, "'"));
      }
      if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100)) {
        return Invalid("logit_bias", absl::StrCat("'logit_bias' values must be numbers in "
                                                  "[-100, 100]; token ", key, " has ",
                                                  value.dump()));
      }
      s.logit_bias.emplace_back(static_cast<int32_t>(id), value.get<float>());
    }
    std::sort(s.logit_bias.begin(), s.logit_bias.end());
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> seed, GetInt(j, "seed"));
  if (seed) {
    if (*seed < 0) return Invalid("seed", "'seed' must be >= 0");
    s.seed = static_cast<uint64_t>(*seed);
  }

  if (const Json* stop = Field(j, "stop")) {
    if (stop->is_string()) {
      r->stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 4) return Invalid("stop", "'stop' may hold at most 4 strings");
      for (const Json& s1 : *stop) {
        if (!s1.is_string()) return Invalid("stop", "'stop' entries must be strings");
        r->stop.push_back(s1.get<std::string>());
      }
    } else {
      return Invalid("stop", "'stop' must be a string or a list of strings");
    }
    for (const std::string& s1 : r->stop) {
      if (s1.empty()) return Invalid("stop", "'stop' strings must not be empty");
    }
  }

  MOESERVE_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, GetBool(j, "ignore_eos"));
  r->ignore_eos = ignore_eos.value_or(false);
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> min_tokens, GetInt(j, "min_tokens"));
  if (min_tokens && *min_tokens < 0) return Invalid("min_tokens", "'min_tokens' must be >= 0");
  r->min_tokens = min_tokens.value_or(0);
  if (const Json* ids = Field(j, "stop_token_ids")) {
    if (!ids->is_array() || ids->size() > kMaxStopTokenIds) {
      return Invalid("stop_token_ids", absl::StrCat("'stop_token_ids' must be a list of at most ",
                                                    kMaxStopTokenIds, " token ids"));
    }
    for (const Json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return Invalid("stop_token_ids", "'stop_token_ids' entries must be token ids");
      }
      s.stop_token_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }

  if (const Json* user = Field(j, "user")) {
    if (!user->is_string()) return Invalid("user", "'user' must be a string");
    r->user = user->get<std::string>();
  }
  return absl::OkStatus();
}

// OpenAI's "metadata": at most 16 string pairs, keys up to 64 characters, values up to 512.
// "store" is accepted (a boolean) for compatibility; nothing is stored.
absl::Status ParseMetadata(const Json& j, ApiRequest* r) {
  MOESERVE_RETURN_IF_ERROR(GetBool(j, "store").status());
  const Json* metadata = Field(j, "metadata");
  if (metadata == nullptr) return absl::OkStatus();
  if (!metadata->is_object()) {
    return Invalid("metadata", "'metadata' must be an object of string values");
  }
  if (metadata->size() > 16) return Invalid("metadata", "'metadata' may hold at most 16 keys");
  for (const auto& [key, value] : metadata->items()) {
    if (key.size() > 64) {
      return Invalid("metadata", "'metadata' keys must be at most 64 characters");
    }
    if (!value.is_string()) {
      return Invalid("metadata", absl::StrCat("'metadata.", key, "' must be a string"));
    }
    if (value.get<std::string>().size() > 512) {
      return Invalid("metadata",
                     absl::StrCat("'metadata.", key, "' must be at most 512 characters"));
    }
    r->metadata.emplace_back(key, value.get<std::string>());
  }
  return absl::OkStatus();
}

// Chat: logprobs is a bool with top_logprobs; completions: logprobs is the top count.
absl::Status ParseChatLogprobs(const Json& j, ApiRequest* r) {
  MOESERVE_ASSIGN_OR_RETURN(std::optional<bool> logprobs, GetBool(j, "logprobs"));
  r->sampling.logprobs = logprobs.value_or(false);
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> top, GetInt(j, "top_logprobs"));
  if (top) {
    if (*top < 0 || *top > 20) return Invalid("top_logprobs", "'top_logprobs' must be in [0, 20]");
    if (!r->sampling.logprobs) {
      return Invalid("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    }
    r->sampling.top_logprobs = static_cast<int32_t>(*top);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MessageContent(const Json& m, const std::string& role, size_t i) {
  const std::string param = absl::StrCat("messages[", i, "].content");
  const Json* content = Field(m, "content");
  if (content == nullptr) {
    if (role == "assistant") return std::string();
    return Invalid(param, absl::StrCat("'", param, "' is required"));
  }
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    return Invalid(param, absl::StrCat("'", param, "' must be a string or an array of parts"));
  }
  std::vector<std::string> texts;
  for (const Json& part : *content) {
    if (!part.is_object())
      return Invalid(param, absl::StrCat("'", param, "' parts must be objects"));
    const Json* type = Field(part, "type");
    if (type == nullptr || !type->is_string()) {
      return Invalid(param, absl::StrCat("'", param, "' parts need a string 'type'"));
    }
    if (type->get<std::string>() != "text") {
      return Invalid(param, absl::StrCat("unsupported content part type '",
                                         type->get<std::string>(), "' (only 'text')"));
    }
    const Json* text = Field(part, "text");
    if (text == nullptr || !text->is_string()) {
      return Invalid(param, absl::StrCat("'", param, "' text parts need a string 'text'"));
    }
    texts.push_back(text->get<std::string>());
  }
  return absl::StrJoin(texts, "\n");
}

absl::Status CheckNoSpecialTokens(const std::string& text, const ModelContext& model,
                                  absl::string_view param) {
  for (const std::string& special : model.special_token_texts) {
    if (absl::StrContains(text, special)) {
      return Invalid(
          param, absl::StrCat("'", param, "' contains the reserved control token '", special, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ContextError(absl::string_view message) {
  return WithErrorCode(Invalid("messages", message), "context_length_exceeded");
}

// An assistant message's "tool_calls": [{"id", "type": "function", "function": {"name",
// "arguments"}}], as OpenAI clients send them back.
absl::Status ParseMessageToolCalls(const Json& calls, const std::string& role,
                                   const std::string& param, ChatMessageInput* msg) {
  const std::string p = param + ".tool_calls";
  if (role != "assistant") {
    return Invalid(p, absl::StrCat("'", p, "' is only allowed on assistant messages"));
  }
  if (!calls.is_array()) return Invalid(p, absl::StrCat("'", p, "' must be an array"));
  for (size_t k = 0; k < calls.size(); ++k) {
    const Json& c = calls[k];
    const std::string cp = absl::StrCat(p, "[", k, "]");
    if (!c.is_object()) return Invalid(cp, absl::StrCat("'", cp, "' must be an object"));
    const Json* id = Field(c, "id");
    if (id == nullptr || !id->is_string()) {
      return Invalid(cp + ".id", absl::StrCat("'", cp, ".id' must be a string"));
    }
    if (const Json* type = Field(c, "type"); type != nullptr && *type != "function") {
      return Invalid(cp + ".type", absl::StrCat("'", cp, ".type' must be 'function'"));
    }
    const Json* f = Field(c, "function");
    const Json* name = f != nullptr && f->is_object() ? Field(*f, "name") : nullptr;
    const Json* arguments = f != nullptr && f->is_object() ? Field(*f, "arguments") : nullptr;
    if (name == nullptr || !name->is_string() || name->get<std::string>().empty()) {
      return Invalid(cp + ".function.name",
                     absl::StrCat("'", cp, ".function.name' must be a non-empty string"));
    }
    if (arguments == nullptr || !arguments->is_string()) {
      return Invalid(cp + ".function.arguments",
                     absl::StrCat("'", cp, ".function.arguments' must be a string (JSON text)"));
    }
    msg->tool_calls.push_back(
        {id->get<std::string>(), name->get<std::string>(), arguments->get<std::string>()});
  }
  return absl::OkStatus();
}

// Every "tool" message answers a call of the assistant message before it (other tool messages
// may come between), and every call of an assistant message is answered before the next
// message of another role, as OpenAI requires.
absl::Status CheckToolMessages(const std::vector<ChatMessageInput>& messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessageInput& m = messages[i];
    if (m.role == "tool") {
      size_t j = i;
      while (j > 0 && messages[j - 1].role == "tool") --j;
      const bool answers =
          j > 0 && std::any_of(messages[j - 1].tool_calls.begin(), messages[j - 1].tool_calls.end(),
                               [&](const ToolCallInput& c) { return c.id == m.tool_call_id; });
      if (!answers) {
        return Invalid(absl::StrCat("messages[", i, "].tool_call_id"),
                       absl::StrCat("'messages[", i, "]' (role 'tool') must answer a tool call of "
                                    "the assistant message before it; no call has the id '",
                                    m.tool_call_id, "'"));
      }
    }
    if (!m.tool_calls.empty() && !m.prefix) {
      for (const ToolCallInput& c : m.tool_calls) {
        bool answered = false;
        for (size_t k = i + 1; k < messages.size() && messages[k].role == "tool"; ++k) {
          answered = answered || messages[k].tool_call_id == c.id;
        }
        if (!answered) {
          return Invalid(absl::StrCat("messages[", i, "].tool_calls"),
                         absl::StrCat("the tool call '", c.id, "' of 'messages[", i,
                                      "]' has no 'tool' message answering it"));
        }
      }
    }
  }
  return absl::OkStatus();
}

// Whether a chat template reads a "tools" variable (else the tools go into the system prompt).
bool TemplateTakesTools(absl::string_view source) {
  auto word = [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (size_t at = source.find("tools"); at != absl::string_view::npos;
       at = source.find("tools", at + 1)) {
    const bool starts = at == 0 || !word(source[at - 1]);
    const bool ends = at + 5 == source.size() || !word(source[at + 5]);
    if (starts && ends) return true;
  }
  return false;
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

absl::StatusOr<ApiRequest> ParseChatCompletionRequest(absl::string_view body) {
  MOESERVE_ASSIGN_OR_RETURN(Json j, ParseBody(body));
  ApiRequest r;
  r.endpoint = Endpoint::kChat;
  MOESERVE_RETURN_IF_ERROR(ParseCommon(j, &r));
  MOESERVE_RETURN_IF_ERROR(ParseChatLogprobs(j, &r));
  MOESERVE_RETURN_IF_ERROR(ParseMetadata(j, &r));
  MOESERVE_ASSIGN_OR_RETURN(r.response_schema, ResponseSchemaFromBody(body));
  MOESERVE_ASSIGN_OR_RETURN(r.tools, ToolsFromBody(body));
  const Json* messages = Field(j, "messages");
  if (messages == nullptr) return Invalid("messages", "'messages' is required");
  if (!messages->is_array()) return Invalid("messages", "'messages' must be an array");
  if (messages->empty()) return Invalid("messages", "'messages' must not be empty");
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Invalid(param, absl::StrCat("'", param, "' must be an object"));
    const Json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) {
      return Invalid(param + ".role", absl::StrCat("'", param, ".role' must be a string"));
    }
    std::string role_name = role->get<std::string>();
    if (role_name == "developer") role_name = "system";
    if (role_name != "system" && role_name != "user" && role_name != "assistant" &&
        role_name != "tool") {
      return Invalid(param + ".role",
                     absl::StrCat("invalid role '", role_name, "' in '", param,
                                  ".role' (system, user, assistant, tool or developer)"));
    }
    if (const Json* name = Field(m, "name"); name != nullptr && !name->is_string()) {
      return Invalid(param + ".name", absl::StrCat("'", param, ".name' must be a string"));
    }
    MOESERVE_ASSIGN_OR_RETURN(std::string content, MessageContent(m, role_name, i));
    ChatMessageInput& msg = r.messages.emplace_back();
    MOESERVE_ASSIGN_OR_RETURN(std::optional<bool> prefix, GetBool(m, "prefix"));
    if (prefix.value_or(false)) {
      if (role_name != "assistant" || i + 1 != messages->size()) {
        return Invalid(param + ".prefix",
                       absl::StrCat("'", param,
                                    ".prefix' is only allowed on the last message, an "
                                    "assistant's"));
      }
      msg.prefix = true;
    }
    if (const Json* reasoning = Field(m, "reasoning_content")) {
      if (!reasoning->is_string()) {
        return Invalid(param + ".reasoning_content",
                       absl::StrCat("'", param, ".reasoning_content' must be a string"));
      }
      msg.reasoning_content = reasoning->get<std::string>();
    }
    if (const Json* calls = Field(m, "tool_calls")) {
      MOESERVE_RETURN_IF_ERROR(ParseMessageToolCalls(*calls, role_name, param, &msg));
    }
    if (const Json* id = Field(m, "tool_call_id")) {
      if (!id->is_string()) {
        return Invalid(param + ".tool_call_id",
                       absl::StrCat("'", param, ".tool_call_id' must be a string"));
      }
      msg.tool_call_id = id->get<std::string>();
    }
    if (role_name == "tool" && msg.tool_call_id.empty()) {
      return Invalid(param + ".tool_call_id",
                     absl::StrCat("'", param, ".tool_call_id' is required for a 'tool' message"));
    }
    msg.role = std::move(role_name);
    msg.content = std::move(content);
  }
  if (const Json* effort = Field(j, "reasoning_effort")) {
    if (!effort->is_string()) {
      return Invalid("reasoning_effort", "'reasoning_effort' must be a string");
    }
    r.reasoning_effort = effort->get<std::string>();
  }
  return r;
}

absl::StatusOr<ApiRequest> ParseCompletionRequest(absl::string_view body) {
  MOESERVE_ASSIGN_OR_RETURN(Json j, ParseBody(body));
  ApiRequest r;
  r.endpoint = Endpoint::kCompletion;
  MOESERVE_ASSIGN_OR_RETURN(std::optional<bool> echo, GetBool(j, "echo"));
  r.echo = echo.value_or(false);
  MOESERVE_RETURN_IF_ERROR(ParseCommon(j, &r));
  if (const Json* suffix = Field(j, "suffix")) {
    if (!suffix->is_string()) return Invalid("suffix", "'suffix' must be a string");
    r.suffix = suffix->get<std::string>();
  }
  if (r.echo && r.suffix) {
    return Invalid("echo", "'echo' cannot be combined with 'suffix' (fill in the middle)");
  }
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> best_of, GetInt(j, "best_of"));
  if (best_of && *best_of != 1) return Invalid("best_of", "only 'best_of' = 1 is supported");
  MOESERVE_ASSIGN_OR_RETURN(std::optional<int64_t> logprobs, GetInt(j, "logprobs"));
  if (logprobs) {
    if (*logprobs < 0 || *logprobs > 20)
      return Invalid("logprobs", "'logprobs' must be in [0, 20]");
    r.sampling.logprobs = true;
    r.sampling.top_logprobs = static_cast<int32_t>(*logprobs);
  }
  const Json* prompt = Field(j, "prompt");
  if (prompt == nullptr) return Invalid("prompt", "'prompt' is required");
  const auto token_ids = [](const Json& list) -> std::optional<std::vector<int64_t>> {
    std::vector<int64_t> ids;
    for (const Json& id : list) {
      if (id.is_number_unsigned()) {
        ids.push_back(static_cast<int64_t>(std::min<uint64_t>(
            id.get<uint64_t>(), static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))));
      } else if (id.is_number_integer()) {
        ids.push_back(id.get<int64_t>());
      } else {
        return std::nullopt;
      }
    }
    return ids;
  };
  constexpr char kShape[] =
      "'prompt' must be a string, an array of token ids, or a batch: an array of strings or of "
      "arrays of token ids";
  if (prompt->is_string()) {
    r.prompt_text = prompt->get<std::string>();
  } else if (!prompt->is_array()) {
    return Invalid("prompt", kShape);
  } else if (prompt->empty()) {
    return Invalid("prompt", "'prompt' must not be empty");
  } else if ((*prompt)[0].is_string() || (*prompt)[0].is_array()) {
    // A batch: every element a string, or every element an array of token ids.
    const bool texts = (*prompt)[0].is_string();
    if (prompt->size() > static_cast<size_t>(kMaxBatchPrompts)) {
      return Invalid("prompt", absl::StrCat("'prompt' batches at most ", kMaxBatchPrompts,
                                            " prompts, got ", prompt->size()));
    }
    for (const Json& one : *prompt) {
      ApiPrompt p;
      if (texts && one.is_string()) {
        p.text = one.get<std::string>();
      } else if (!texts && one.is_array()) {
        p.ids = token_ids(one);
        if (!p.ids) return Invalid("prompt", kShape);
      } else {
        return Invalid("prompt", absl::StrCat(kShape, " (not a mix)"));
      }
      r.prompt_batch.push_back(std::move(p));
    }
    if (r.prompt_batch.size() == 1) {  // a batch of one is that prompt
      r.prompt_text = std::move(r.prompt_batch[0].text);
      r.prompt_ids = std::move(r.prompt_batch[0].ids);
      r.prompt_batch.clear();
    }
    if (static_cast<int64_t>(r.prompt_batch.size()) * r.n > kMaxBatchPrompts) {
      return Invalid("n", absl::StrCat(r.prompt_batch.size(), " prompts x 'n' ", r.n,
                                       " choices exceed the ", kMaxBatchPrompts,
                                       " one request may ask for"));
    }
  } else {
    r.prompt_ids = token_ids(*prompt);
    if (!r.prompt_ids) return Invalid("prompt", kShape);
  }
  return r;
}

absl::StatusOr<std::vector<PreparedRequest>> PrepareBatch(const ApiRequest& request,
                                                          const ModelContext& model,
                                                          const std::string& request_id) {
  std::vector<PreparedRequest> out;
  if (request.prompt_batch.empty()) {
    MOESERVE_ASSIGN_OR_RETURN(PreparedRequest p, PrepareRequest(request, model, request_id));
    out.push_back(std::move(p));
    return out;
  }
  for (size_t i = 0; i < request.prompt_batch.size(); ++i) {
    ApiRequest one = request;
    one.prompt_batch.clear();
    one.prompt_text = request.prompt_batch[i].text;
    one.prompt_ids = request.prompt_batch[i].ids;
    absl::StatusOr<PreparedRequest> p =
        PrepareRequest(one, model, absl::StrCat(request_id, "-p", i));
    if (!p.ok()) {  // the same error (param, code) naming the prompt
      absl::Status named(p.status().code(), absl::StrCat("prompt[", i, "]: ", p.status().message()));
      p.status().ForEachPayload([&named](absl::string_view url, const absl::Cord& payload) {
        named.SetPayload(url, payload);
      });
      return named;
    }
    out.push_back(std::move(*p));
  }
  return out;
}

OutputAssembler MakeOutputAssembler(const engine::Tokenizer& tokenizer, const PreparedRequest& p) {
  OutputAssembler out(tokenizer, p.split_reasoning, p.starts_in_reasoning, p.stop,
                      p.prompt_tokens, p.parse_tool_calls);
  if (p.echo_text) out.Echo(*p.echo_text, p.generation.prompt_ids, p.score_only);
  if (p.endpoint == Endpoint::kCompletion) out.ReportStopToken();
  return out;
}

GenerationRequest ChoiceRequest(const GenerationRequest& first, int index) {
  GenerationRequest r = first;
  if (index == 0) return r;
  absl::StrAppend(&r.request_id, "-", index);
  if (r.sampling.seed) {
    uint64_t z = *r.sampling.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(index);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    r.sampling.seed = z ^ (z >> 31);
  }
  return r;
}

absl::Status ModelNotFound(absl::string_view requested, const ModelContext& model) {
  return WithErrorCode(
      WithErrorParam(absl::NotFoundError(absl::StrCat("The model '", requested,
                                                      "' does not exist (this server has '",
                                                      model.name, "')")),
                     "model"),
      "model_not_found");
}

absl::StatusOr<PreparedRequest> PrepareRequest(const ApiRequest& r, const ModelContext& model,
                                               const std::string& request_id) {
  if (r.model != model.name) return ModelNotFound(r.model, model);
  if (!r.prompt_batch.empty()) {
    return Invalid("prompt", "several prompts in one request are served by /v1/completions only");
  }
  PreparedRequest p;
  p.endpoint = r.endpoint;
  p.model = model.name;
  p.stream = r.stream;
  p.include_usage = r.include_usage;
  p.n = r.n;
  p.generation.priority = r.priority;
  p.stop = r.stop;
  for (const std::string& s : r.stop) {
    if (!IsValidUtf8(s)) return Invalid("stop", "'stop' is not valid UTF-8");
  }
  engine::EncodeOptions opts;
  opts.parse_special_tokens = false;
  std::vector<int32_t>& ids = p.generation.prompt_ids;
  if (r.endpoint == Endpoint::kChat) {
    if (r.messages.empty()) return Invalid("messages", "'messages' must not be empty");
    if (!model.chat_template) {
      return Invalid("messages", "this model has no chat template; use /v1/completions");
    }
    engine::ChatTemplateInputs inputs;
    const bool prefix = r.messages.back().prefix;
    MOESERVE_RETURN_IF_ERROR(CheckToolMessages(r.messages));
    const bool thinking_template = absl::StrContains(model.chat_template->source(), "<think>");
    size_t turn_start = 0;  // the current turn: after the last user message
    for (size_t i = 0; i < r.messages.size(); ++i) {
      if (r.messages[i].role == "user") turn_start = i + 1;
    }
    for (size_t i = 0; i < r.messages.size(); ++i) {
      const ChatMessageInput& m = r.messages[i];
      const std::string param = absl::StrCat("messages[", i, "].content");
      if (!IsValidUtf8(m.content)) {
        return Invalid(param, absl::StrCat("'", param, "' is not valid UTF-8"));
      }
      MOESERVE_RETURN_IF_ERROR(CheckNoSpecialTokens(m.content, model, param));
      const bool reasoning_needed = !m.tool_calls.empty() && i >= turn_start && thinking_template;
      if ((m.prefix || reasoning_needed) && m.reasoning_content) {
        const std::string rparam = absl::StrCat("messages[", i, "].reasoning_content");
        if (!IsValidUtf8(*m.reasoning_content)) {
          return Invalid(rparam, absl::StrCat("'", rparam, "' is not valid UTF-8"));
        }
        MOESERVE_RETURN_IF_ERROR(CheckNoSpecialTokens(*m.reasoning_content, model, rparam));
      }
      // The prefix message is not rendered by the template: AppendAssistantPrefix continues
      // the generation prompt with it.
      if (m.prefix) continue;
      nlohmann::ordered_json msg = {{"role", m.role}, {"content", m.content}};
      if (!m.tool_calls.empty()) {
        // DeepSeek's templates render the calls of an assistant message whose content is null.
        msg["content"] = nullptr;
        msg["tool_calls"] = nlohmann::ordered_json::array();
        for (size_t k = 0; k < m.tool_calls.size(); ++k) {
          const ToolCallInput& c = m.tool_calls[k];
          const std::string cparam = absl::StrCat("messages[", i, "].tool_calls[", k, "]");
          for (const std::string* text : {&c.id, &c.name, &c.arguments}) {
            if (!IsValidUtf8(*text)) {
              return Invalid(cparam, absl::StrCat("'", cparam, "' is not valid UTF-8"));
            }
            MOESERVE_RETURN_IF_ERROR(CheckNoSpecialTokens(*text, model, cparam));
          }
          msg["tool_calls"].push_back(
              {{"id", c.id},
               {"type", "function"},
               {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
        }
        if (reasoning_needed) {
          // DeepSeek's rule for thinking with tools: within the turn, the thought behind each
          // call goes back to the model.
          if (!m.reasoning_content) {
            return Invalid(absl::StrCat("messages[", i, "].reasoning_content"),
                           absl::StrCat("'messages[", i,
                                        "].reasoning_content' is required: an assistant message "
                                        "that called tools in the current turn must carry its "
                                        "reasoning_content back"));
          }
          msg["reasoning_content"] = *m.reasoning_content;
        }
      }
      if (m.role == "tool") msg["tool_call_id"] = m.tool_call_id;
      inputs.messages.push_back(std::move(msg));
    }
    const bool with_tools = r.tools.choice != ToolChoice::kNone && !r.tools.tools.empty();
    if (with_tools) {
      if (!ModelSupportsToolCalls(model)) {
        return Invalid("tools", "this model's tokenizer has no tool-call tokens");
      }
      const std::string description = ToolsSystemPrompt(r.tools.tools);
      for (size_t i = 0; i < r.tools.tools.size(); ++i) {
        const ToolDefinition& t = r.tools.tools[i];
        const std::string tparam = absl::StrCat("tools[", i, "].function");
        const std::string text = absl::StrCat(t.description, t.parameters.dump());
        if (!IsValidUtf8(text)) return Invalid(tparam, absl::StrCat("'", tparam, "' is not valid UTF-8"));
        MOESERVE_RETURN_IF_ERROR(CheckNoSpecialTokens(text, model, tparam));
      }
      if (TemplateTakesTools(model.chat_template->source())) {
        nlohmann::ordered_json tools = nlohmann::ordered_json::array();
        for (const ToolDefinition& t : r.tools.tools) {
          nlohmann::ordered_json f = {{"name", t.name}, {"description", t.description}};
          if (!t.parameters.is_null()) f["parameters"] = t.parameters;
          tools.push_back({{"type", "function"}, {"function", std::move(f)}});
        }
        inputs.extra["tools"] = std::move(tools);
      } else if (!inputs.messages.empty() && inputs.messages[0]["role"] == "system") {
        inputs.messages[0]["content"] =
            absl::StrCat(inputs.messages[0]["content"].get<std::string>(), "\n\n", description);
      } else {
        inputs.messages.insert(inputs.messages.begin(),
                               nlohmann::ordered_json{{"role", "system"}, {"content", description}});
      }
    }
    p.parse_tool_calls = with_tools;
    inputs.add_generation_prompt = true;
    inputs.bos_token = model.bos_token;
    inputs.eos_token = model.eos_token;
    absl::StatusOr<std::string> rendered = engine::ApplyChatTemplate(*model.chat_template, inputs);
    if (!rendered.ok()) {
      // raise_exception in the template (e.g. roles out of order) is the client's error.
      return Invalid("messages", rendered.status().message());
    }
    p.split_reasoning = true;
    p.starts_in_reasoning = absl::EndsWith(*rendered, "<think>\n");
    if (p.starts_in_reasoning && model.reject_reasoner_logprobs && r.sampling.logprobs) {
      return Invalid("logprobs",
                     "'logprobs' and 'top_logprobs' are not supported for this reasoning model");
    }
    if (prefix) {
      MOESERVE_ASSIGN_OR_RETURN(
          *rendered, AppendAssistantPrefix(*rendered, r.messages.back(), r.messages.size() - 1,
                                           &p.starts_in_reasoning));
    }
    engine::EncodeOptions template_opts;
    template_opts.add_special_tokens = false;  // the template wrote BOS
    MOESERVE_ASSIGN_OR_RETURN(ids, model.tokenizer->Encode(*rendered, template_opts));
  } else if (r.prompt_text && r.suffix) {
    MOESERVE_ASSIGN_OR_RETURN(ids, EncodeFimPrompt(model, *r.prompt_text, *r.suffix));
  } else if (r.suffix) {
    return Invalid("suffix", "'suffix' needs a text 'prompt' (not token ids)");
  } else if (r.prompt_text) {
    if (!IsValidUtf8(*r.prompt_text)) return Invalid("prompt", "'prompt' is not valid UTF-8");
    if (r.prompt_text->empty()) return Invalid("prompt", "'prompt' must not be empty");
    absl::StatusOr<std::vector<int32_t>> encoded = model.tokenizer->Encode(*r.prompt_text, opts);
    if (!encoded.ok()) return Invalid("prompt", encoded.status().message());
    ids = std::move(*encoded);
  } else if (r.prompt_ids) {
    if (r.prompt_ids->empty()) return Invalid("prompt", "'prompt' must not be empty");
    for (int64_t id : *r.prompt_ids) {
      if (id < 0 || id >= model.vocab_size) {
        return Invalid("prompt", absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                              model.vocab_size, ")"));
      }
      ids.push_back(static_cast<int32_t>(id));
    }
  } else {
    return Invalid("prompt", "'prompt' is required");
  }

  const int64_t prompt_tokens = static_cast<int64_t>(ids.size());
  p.prompt_tokens = static_cast<int32_t>(prompt_tokens);
  if (prompt_tokens >= model.context_length) {
    return ContextError(absl::StrCat("This model's maximum context length is ",
                                     model.context_length, " tokens; the prompt has ",
                                     prompt_tokens, " tokens"));
  }
  int64_t max_tokens = 0;
  if (r.max_tokens) {
    if (*r.max_tokens > model.context_length) {
      return WithErrorParam(absl::InvalidArgumentError(absl::StrCat("'max_tokens' ", *r.max_tokens,
                                                                    " exceeds the context length ",
                                                                    model.context_length)),
                            "max_tokens");
    }
    if (prompt_tokens + *r.max_tokens > model.context_length) {
      return ContextError(absl::StrCat("This model's maximum context length is ",
                                       model.context_length, " tokens. However, you requested ",
                                       prompt_tokens + *r.max_tokens, " tokens (", prompt_tokens,
                                       " in the prompt, ", *r.max_tokens, " in the completion)"));
    }
    max_tokens = *r.max_tokens;
  } else {
    max_tokens = std::min<int64_t>(std::max<int32_t>(model.default_max_tokens, 1),
                                   model.context_length - prompt_tokens);
  }

  if (r.echo) {
    if (r.prompt_text) {
      p.echo_text = *r.prompt_text;
    } else {
      engine::DecodeOptions skip;
      skip.skip_special_tokens = true;
      absl::StatusOr<std::string> text = model.tokenizer->Decode(ids, skip);
      if (!text.ok()) return Invalid("prompt", text.status().message());
      p.echo_text = std::move(*text);
    }
    // max_tokens 0 scores the prompt only: the cluster makes one token, which is dropped.
    p.score_only = max_tokens == 0;
    if (p.score_only) max_tokens = 1;
  }

  GenerationRequest& g = p.generation;
  g.request_id = request_id;
  g.sampling = r.sampling;
  if (r.echo && r.sampling.logprobs) {
    if (r.show_prompt_logprobs) {
      return Invalid("prompt_logprobs",
                     "score the prompt one way: 'prompt_logprobs', or 'echo' with 'logprobs'");
    }
    g.prompt_logprobs = r.sampling.top_logprobs;
  }
  if (r.prompt_logprobs) {
    if (*r.prompt_logprobs < 0 || *r.prompt_logprobs > 20) {
      return Invalid("prompt_logprobs", "'prompt_logprobs' must be in [0, 20]");
    }
    g.prompt_logprobs = *r.prompt_logprobs;
  }
  g.max_new_tokens = static_cast<int32_t>(max_tokens);
  g.ignore_eos = r.ignore_eos;
  if (r.min_tokens > max_tokens) {
    return Invalid("min_tokens", absl::StrCat("'min_tokens' (", r.min_tokens,
                                              ") must not exceed max_tokens (", max_tokens, ")"));
  }
  g.min_tokens = static_cast<int32_t>(r.min_tokens);
  g.sample_vocab = model.vocab_size;
  if (r.reasoning_effort) {
    absl::StatusOr<int64_t> budget = model.thinking_budget.ForEffort(*r.reasoning_effort);
    if (!budget.ok()) return Invalid("reasoning_effort", budget.status().message());
    if (p.starts_in_reasoning && !model.think_close_ids.empty()) {
      g.thinking_budget = static_cast<int32_t>(*budget);
      g.think_close_ids = model.think_close_ids;
    }
  }
  const bool forced_call =
      r.tools.choice == ToolChoice::kRequired || r.tools.choice == ToolChoice::kNamed;
  if (forced_call && !r.response_schema.empty()) {
    return Invalid("response_format",
                   "'response_format' cannot be combined with a forced tool call ('tool_choice' "
                   "required or a named function)");
  }
  if (forced_call) {
    MOESERVE_ASSIGN_OR_RETURN(g.tool_calls, ForcedToolCallGrammar(r.tools, model));
  }
  if (!r.response_schema.empty() || forced_call) {
    // The constraint holds for the answer, not the thought: with a template that opens <think>,
    // it starts after the model (or the thinking budget) writes "</think>".
    g.response_schema = r.response_schema;
    if (p.starts_in_reasoning) {
      if (model.think_close_ids.empty()) {
        return Invalid(forced_call ? "tool_choice" : "response_format",
                       "this model's tokenizer has no </think> token to end its reasoning");
      }
      g.constraint_after_token = model.think_close_ids[0];
    }
  }
  if (g.min_tokens > 0 && (!g.response_schema.empty() || g.tool_calls)) {
    // A finished JSON document or tool call allows only its end: masking EOS would leave it
    // nothing to sample.
    return Invalid("min_tokens",
                   "'min_tokens' cannot be combined with response_format or forced tool calls");
  }
  // Ids against the vocabulary (logit_bias, stop_token_ids): the engine's checks, which name
  // the field.
  if (absl::Status s = engine::ValidateSamplingParams(g.sampling, model.vocab_size); !s.ok()) {
    return s.GetPayload(kErrorParamPayload) ? s : WithErrorParam(s, "sampling");
  }
  return p;
}

}  // namespace moeserve::gateway
