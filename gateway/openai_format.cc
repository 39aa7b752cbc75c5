#include "gateway/openai_format.h"

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

Json Choice(const ResponseMeta& meta, Json delta_or_text, const Json& finish, bool chunk) {
  Json c = {{"index", 0}};
  if (meta.endpoint == Endpoint::kChat) {
    c[chunk ? "delta" : "message"] = std::move(delta_or_text);
  } else {
    c["text"] = std::move(delta_or_text);
  }
  c["logprobs"] = nullptr;
  c["finish_reason"] = finish;
  return c;
}

}  // namespace

Json FinishReasonJson(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
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
  Json j = Envelope(meta, false);
  Json body;
  if (meta.endpoint == Endpoint::kChat) {
    body = {{"role", "assistant"}, {"content", text.content}};
    if (meta.split_reasoning) {
      body["reasoning_content"] = text.reasoning.empty() ? Json(nullptr) : Json(text.reasoning);
    }
  } else {
    body = text.content;
  }
  j["choices"] = Json::array({Choice(meta, std::move(body), FinishReasonJson(finish), false)});
  j["usage"] = UsageJson(usage);
  return j;
}

Json RoleChunkJson(const ResponseMeta& meta) {
  Json j = Envelope(meta, true);
  j["choices"] =
      Json::array({Choice(meta, {{"role", "assistant"}, {"content", ""}}, nullptr, true)});
  return j;
}

Json DeltaChunkJson(const ResponseMeta& meta, const TextDelta& delta) {
  Json j = Envelope(meta, true);
  Json body;
  if (meta.endpoint == Endpoint::kChat) {
    body = Json::object();
    if (!delta.reasoning.empty()) body["reasoning_content"] = delta.reasoning;
    if (!delta.content.empty()) body["content"] = delta.content;
  } else {
    body = delta.content;
  }
  j["choices"] = Json::array({Choice(meta, std::move(body), nullptr, true)});
  return j;
}

Json FinishChunkJson(const ResponseMeta& meta, FinishReason finish) {
  Json j = Envelope(meta, true);
  Json body = meta.endpoint == Endpoint::kChat ? Json::object() : Json("");
  j["choices"] = Json::array({Choice(meta, std::move(body), FinishReasonJson(finish), true)});
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
