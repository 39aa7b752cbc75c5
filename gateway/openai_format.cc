#include "gateway/openai_format.h"

#include "absl/strings/str_cat.h"

namespace moeserve::gateway {
namespace {

using Json = nlohmann::json;

Json Envelope(const ResponseMeta& meta, bool chunk) {
  const bool chat = meta.endpoint == Endpoint::kChat;
  Json j = {
      {"id", meta.id},
      {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
      {"created", meta.created},
      {"model", meta.model},
      {"system_fingerprint", "moeserve"}};
  if (chunk && meta.include_usage) j["usage"] = nullptr;
  return j;
}

Json Choice(const ResponseMeta& meta, int index, Json delta_or_text, Json logprobs,
            const Json& finish, bool chunk) {
  Json c = {{"index", index}};
  if (meta.endpoint == Endpoint::kChat) {
    c[chunk ? "delta" : "message"] = std::move(delta_or_text);
  } else {
    c["text"] = std::move(delta_or_text);
  }
  c["logprobs"] = std::move(logprobs);
  c["finish_reason"] = finish;
  return c;
}

Json Bytes(const std::string& bytes) {
  Json j = Json::array();
  for (char c : bytes) j.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return j;
}

Json ChatEntries(const std::vector<LogprobEntry>& entries) {
  Json out = Json::array();
  for (const LogprobEntry& e : entries) {
    Json top = Json::array();
    for (const auto& [bytes, logprob] : e.top) {
      top.push_back({{"token", TokenString(bytes)}, {"logprob", logprob}, {"bytes", Bytes(bytes)}});
    }
    out.push_back({{"token", TokenString(e.bytes)},
                   {"logprob", e.logprob},
                   {"bytes", Bytes(e.bytes)},
                   {"top_logprobs", std::move(top)}});
  }
  return out;
}

Json CompletionLogprobs(const std::vector<LogprobEntry>& entries) {
  Json tokens = Json::array(), logprobs = Json::array(), top = Json::array(),
       offsets = Json::array();
  for (const LogprobEntry& e : entries) {
    tokens.push_back(TokenString(e.bytes));
    offsets.push_back(e.text_offset);
    if (!e.scored) {  // the echoed prompt's first token: null, as OpenAI returns it
      logprobs.push_back(nullptr);
      top.push_back(nullptr);
      continue;
    }
    logprobs.push_back(e.logprob);
    Json alternatives = Json::object();
    for (const auto& [bytes, logprob] : e.top) alternatives[TokenString(bytes)] = logprob;
    top.push_back(std::move(alternatives));
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

}  // namespace

std::string TokenString(const std::string& bytes) {
  if (IsValidUtf8(bytes)) return bytes;
  std::string out = "bytes:";
  for (char c : bytes) {
    absl::StrAppend(&out, "\\x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
  }
  return out;
}

Json PromptLogprobsJson(absl::Span<const int32_t> ids,
                        absl::Span<const engine::SampleResult> scores,
                        const engine::Tokenizer& tokenizer) {
  auto entry = [&tokenizer](int32_t id, float logprob, int64_t rank) {
    const std::optional<absl::string_view> bytes = tokenizer.TokenBytes(id);
    return Json{{"logprob", logprob},
                {"rank", rank},
                {"decoded_token", TokenString(bytes ? std::string(*bytes) : std::string())}};
  };
  Json out = Json::array();
  for (size_t p = 0; p < ids.size(); ++p) {
    if (p == 0 || p - 1 >= scores.size()) {
      out.push_back(nullptr);
      continue;
    }
    const engine::SampleResult& r = scores[p - 1];
    Json d = Json::object();
    d[absl::StrCat(ids[p])] = entry(ids[p], r.logprob, r.rank);
    for (size_t k = 0; k < r.top_logprobs.size(); ++k) {
      const engine::TokenLogprob& t = r.top_logprobs[k];
      const std::string key = absl::StrCat(t.token);
      if (!d.contains(key)) d[key] = entry(t.token, t.logprob, static_cast<int64_t>(k) + 1);
    }
    out.push_back(std::move(d));
  }
  return out;
}

Json LogprobsJson(const ResponseMeta& meta, const TextDelta& delta) {
  if (!meta.logprobs) return nullptr;
  if (meta.endpoint != Endpoint::kChat) return CompletionLogprobs(delta.content_logprobs);
  Json j = {{"content", ChatEntries(delta.content_logprobs)}, {"refusal", nullptr}};
  if (meta.split_reasoning) j["reasoning_content"] = ChatEntries(delta.reasoning_logprobs);
  return j;
}

Json FinishReasonJson(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kToolCalls:
      return "tool_calls";
    case FinishReason::kNone:
    case FinishReason::kCancelled:
      break;
  }
  return nullptr;
}

Json UsageJson(const UsageInfo& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_cache_hit_tokens", u.cached_tokens},
          {"prompt_cache_miss_tokens", u.prompt_tokens - u.cached_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"completion_tokens_details", {{"reasoning_tokens", u.reasoning_tokens}}}};
}

Json CompletionResponseJson(const ResponseMeta& meta, const TextDelta& text, FinishReason finish,
                            const UsageInfo& usage) {
  return CompletionResponseJson(meta, {ChoiceResult{text, finish}}, usage);
}

Json CompletionResponseJson(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices,
                            const UsageInfo& usage) {
  Json j = Envelope(meta, false);
  j["choices"] = Json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const TextDelta& text = choices[i].text;
    Json body;
    if (meta.endpoint == Endpoint::kChat) {
      body = {{"role", "assistant"}, {"content", text.content}};
      if (meta.split_reasoning) {
        body["reasoning_content"] = text.reasoning.empty() ? Json(nullptr) : Json(text.reasoning);
      }
      if (!text.tool_calls.empty()) {
        // OpenAI's shape: content null when the answer is only calls.
        if (text.content.find_first_not_of(" \t\r\n") == std::string::npos) {
          body["content"] = nullptr;
        }
        body["tool_calls"] = Json::array();
        for (const ToolCallDelta& c : text.tool_calls) {
          body["tool_calls"].push_back(
              {{"id", c.id},
               {"type", "function"},
               {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
        }
      }
    } else {
      body = text.content;
    }
    j["choices"].push_back(Choice(meta, static_cast<int>(i), std::move(body),
                                  LogprobsJson(meta, text), FinishReasonJson(choices[i].finish),
                                  false));
  }
  j["usage"] = UsageJson(usage);
  return j;
}

Json RoleChunkJson(const ResponseMeta& meta, int index) {
  Json j = Envelope(meta, true);
  j["choices"] = Json::array(
      {Choice(meta, index, {{"role", "assistant"}, {"content", ""}}, nullptr, nullptr, true)});
  return j;
}

Json DeltaChunkJson(const ResponseMeta& meta, const TextDelta& delta, int index) {
  Json j = Envelope(meta, true);
  Json body;
  if (meta.endpoint == Endpoint::kChat) {
    body = Json::object();
    if (!delta.reasoning.empty()) body["reasoning_content"] = delta.reasoning;
    if (!delta.content.empty()) body["content"] = delta.content;
    if (!delta.tool_calls.empty()) {
      body["tool_calls"] = Json::array();
      for (const ToolCallDelta& c : delta.tool_calls) {
        Json call = {{"index", c.index}};
        if (!c.id.empty()) {
          call["id"] = c.id;
          call["type"] = "function";
          call["function"] = {{"name", c.name}, {"arguments", c.arguments}};
        } else {
          call["function"] = {{"arguments", c.arguments}};
        }
        body["tool_calls"].push_back(std::move(call));
      }
    }
  } else {
    body = delta.content;
  }
  j["choices"] =
      Json::array({Choice(meta, index, std::move(body), LogprobsJson(meta, delta), nullptr, true)});
  return j;
}

Json FinishChunkJson(const ResponseMeta& meta, FinishReason finish, int index) {
  Json j = Envelope(meta, true);
  Json body = meta.endpoint == Endpoint::kChat ? Json::object() : Json("");
  j["choices"] =
      Json::array({Choice(meta, index, std::move(body), nullptr, FinishReasonJson(finish), true)});
  return j;
}

Json UsageChunkJson(const ResponseMeta& meta, const UsageInfo& usage) {
  Json j = Envelope(meta, true);
  j["choices"] = Json::array();
  j["usage"] = UsageJson(usage);
  return j;
}

std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string SseEvent(const Json& event) { return "data: " + DumpJson(event) + "\n\n"; }

std::string SseDone() { return "data: [DONE]\n\n"; }

Json ModelsJson(const std::string& model, int64_t created, int64_t context_length) {
  return {{"object", "list"},
          {"data", Json::array({{{"id", model},
                                 {"object", "model"},
                                 {"created", created},
                                 {"owned_by", "moeserve"},
                                 {"context_length", context_length}}})}};
}

}  // namespace moeserve::gateway
