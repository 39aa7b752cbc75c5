#include "gateway/beta_prompts.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "common/status_macros.h"

namespace moeserve::gateway {
namespace {

constexpr char kFimBegin[] = "<｜fim▁begin｜>";
constexpr char kFimHole[] = "<｜fim▁hole｜>";
constexpr char kFimEnd[] = "<｜fim▁end｜>";

absl::Status Invalid(absl::string_view param, absl::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(message), param);
}

absl::Status CheckText(const std::string& text, const ModelContext& model,
                       absl::string_view param) {
  if (!IsValidUtf8(text)) return Invalid(param, absl::StrCat("'", param, "' is not valid UTF-8"));
  for (const std::string& special : model.special_token_texts) {
    if (absl::StrContains(text, special)) {
      return Invalid(
          param, absl::StrCat("'", param, "' contains the reserved control token '", special, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> EncodeFimPrompt(const ModelContext& model,
                                                     const std::string& prompt,
                                                     const std::string& suffix) {
  const engine::Tokenizer& tok = *model.tokenizer;
  const std::optional<int32_t> begin = tok.TokenToId(kFimBegin);
  const std::optional<int32_t> hole = tok.TokenToId(kFimHole);
  const std::optional<int32_t> end = tok.TokenToId(kFimEnd);
  if (!begin || !hole || !end) {
    return Invalid("suffix", "this model's tokenizer has no fill-in-the-middle tokens");
  }
  MOESERVE_RETURN_IF_ERROR(CheckText(prompt, model, "prompt"));
  MOESERVE_RETURN_IF_ERROR(CheckText(suffix, model, "suffix"));
  engine::EncodeOptions opts;
  opts.add_special_tokens = false;
  opts.parse_special_tokens = false;
  std::vector<int32_t> ids;
  if (tok.add_bos_token() && tok.bos_id()) ids.push_back(*tok.bos_id());
  ids.push_back(*begin);
  MOESERVE_RETURN_IF_ERROR(tok.EncodeTo(prompt, opts, &ids));
  ids.push_back(*hole);
  MOESERVE_RETURN_IF_ERROR(tok.EncodeTo(suffix, opts, &ids));
  ids.push_back(*end);
  return ids;
}

absl::StatusOr<std::string> AppendAssistantPrefix(const std::string& rendered,
                                                  const ChatMessageInput& prefix, size_t index,
                                                  bool* starts_in_reasoning) {
  const bool thought_open = absl::EndsWith(rendered, "<think>\n");
  std::string out = rendered;
  if (prefix.reasoning_content && !thought_open) {
    const std::string param = absl::StrCat("messages[", index, "].reasoning_content");
    return Invalid(param, absl::StrCat("'", param,
                                       "' as a prefix needs a reasoning model (its chat "
                                       "template opens <think>)"));
  }
  if (thought_open) {
    out += prefix.reasoning_content.value_or("");
    if (prefix.content.empty()) {
      *starts_in_reasoning = true;
      return out;
    }
    out += "\n</think>\n\n";
  }
  out += prefix.content;
  *starts_in_reasoning = false;
  return out;
}

}  // namespace moeserve::gateway
