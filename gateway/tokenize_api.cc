#include "gateway/tokenize_api.h"

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "common/status_macros.h"
#include "gateway/request_mapping.h"

namespace moeserve::gateway {
namespace {

using Json = nlohmann::ordered_json;

// The body as a JSON object whose "model", when given, is this server's.
absl::StatusOr<Json> ParseBody(absl::string_view body, const ModelContext& model) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object");
  }
  if (j.contains("model")) {
    if (!j["model"].is_string()) return InvalidParam("model", "'model' must be a string");
    if (j["model"] != model.name) return ModelNotFound(j["model"].get<std::string>(), model);
  }
  return j;
}

// An optional boolean field.
absl::StatusOr<bool> BoolField(const Json& j, const char* name, bool dflt) {
  if (!j.contains(name) || j[name].is_null()) return dflt;
  if (!j[name].is_boolean()) {
    return InvalidParam(name, absl::StrCat("'", name, "' must be a boolean"));
  }
  return j[name].get<bool>();
}

}  // namespace

absl::StatusOr<nlohmann::ordered_json> TokenizeResponse(absl::string_view body,
                                                        const ModelContext& model) {
  MOESERVE_ASSIGN_OR_RETURN(Json j, ParseBody(body, model));
  MOESERVE_ASSIGN_OR_RETURN(const bool token_strs, BoolField(j, "return_token_strs", false));
  std::vector<int32_t> ids;
  if (j.contains("messages")) {
    if (j.contains("prompt")) {
      return InvalidParam("prompt", "give 'prompt' or 'messages', not both");
    }
    MOESERVE_ASSIGN_OR_RETURN(const bool generation_prompt,
                              BoolField(j, "add_generation_prompt", true));
    if (!generation_prompt) {
      return InvalidParam("add_generation_prompt",
                          "'add_generation_prompt': false is not supported: a chat request always "
                          "opens the assistant's turn, and these are its tokens");
    }
    // Exactly what /v1/chat/completions would send the model.
    j["model"] = model.name;
    MOESERVE_ASSIGN_OR_RETURN(const ApiRequest request, ParseChatCompletionRequest(j.dump()));
    MOESERVE_ASSIGN_OR_RETURN(PreparedRequest prepared,
                              PrepareRequest(request, model, "tokenize"));
    ids = std::move(prepared.generation.prompt_ids);
  } else {
    if (!j.contains("prompt")) return InvalidParam("prompt", "'prompt' or 'messages' is required");
    if (!j["prompt"].is_string()) return InvalidParam("prompt", "'prompt' must be a string");
    engine::EncodeOptions options;
    MOESERVE_ASSIGN_OR_RETURN(options.add_special_tokens,
                              BoolField(j, "add_special_tokens", true));
    absl::StatusOr<std::vector<int32_t>> encoded =
        model.tokenizer->Encode(j["prompt"].get<std::string>(), options);
    if (!encoded.ok()) {
      return InvalidParam("prompt", absl::StrCat("'prompt': ", encoded.status().message()));
    }
    ids = *std::move(encoded);
  }
  Json out = {{"count", ids.size()}, {"max_model_len", model.context_length}, {"tokens", ids}};
  out["token_strs"] = nullptr;
  if (token_strs) {
    out["token_strs"] = Json::array();
    for (int32_t id : ids) out["token_strs"].push_back(model.tokenizer->IdToToken(id).value_or(""));
  }
  return out;
}

absl::StatusOr<nlohmann::ordered_json> DetokenizeResponse(absl::string_view body,
                                                          const ModelContext& model) {
  MOESERVE_ASSIGN_OR_RETURN(const Json j, ParseBody(body, model));
  if (!j.contains("tokens") || !j["tokens"].is_array()) {
    return InvalidParam("tokens", "'tokens' must be an array of token ids");
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j["tokens"].size(); ++i) {
    const Json& t = j["tokens"][i];
    const std::string param = absl::StrCat("tokens[", i, "]");
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= model.vocab_size) {
      return InvalidParam(param, absl::StrCat("'", param, "' must be a token id in [0, ",
                                              model.vocab_size, ")"));
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  MOESERVE_ASSIGN_OR_RETURN(std::string text, model.tokenizer->Decode(ids));
  return Json{{"prompt", std::move(text)}};
}

}  // namespace moeserve::gateway
