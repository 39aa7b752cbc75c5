#ifndef MOESERVE_ENGINE_CHAT_TEMPLATE_H_
#define MOESERVE_ENGINE_CHAT_TEMPLATE_H_

// Hugging Face chat templates (the Jinja subset they use), rendered byte for byte as
// @huggingface/jinja 0.5.1 renders them: its whitespace handling (trim_blocks, lstrip_blocks),
// its filters and tests, JavaScript-style printing (true/false, 3.0) and undefined semantics.
//
//   absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
//   absl::StatusOr<std::string> prompt = ApplyChatTemplate(*t, {.messages = messages, ...});
//
// Errors are absl::Status values, never exceptions: syntax errors (InvalidArgument, with line and
// column), runtime errors (InvalidArgument, "chat template error: ..."), and raise_exception(msg)
// (InvalidArgument whose message is exactly `msg`). A parsed template is immutable and may be
// rendered concurrently.

#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {

namespace chat {
struct ParsedTemplate;
}  // namespace chat

class ChatTemplate {
 public:
  static absl::StatusOr<ChatTemplate> Parse(absl::string_view source);

  // Renders with `context`'s members as template variables. Key order matters for tojson and
  // dict iteration, so ordered_json is the faithful input; nlohmann::json (sorted keys) is
  // accepted too.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

  const std::string& source() const;

 private:
  explicit ChatTemplate(std::shared_ptr<const chat::ParsedTemplate> parsed) : parsed_(std::move(parsed)) {}

  std::shared_ptr<const chat::ParsedTemplate> parsed_;
};

struct ChatTemplateInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  bool add_generation_prompt = false;
  std::string bos_token;
  std::string eos_token;
  // Extra variables (e.g. "tools", "documents"); each member becomes a template variable and
  // overrides the fields above when the names clash.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

absl::StatusOr<std::string> ApplyChatTemplate(const ChatTemplate& chat_template, const ChatTemplateInputs& inputs);

// Reads `chat_template` from `model_dir`/tokenizer_config.json: either a string, or a list of
// {"name", "template"} objects, from which "default" is taken. NotFound when absent.
absl::StatusOr<std::string> LoadChatTemplate(absl::string_view model_dir);

// DeepSeek-R1's chat template: DeepSeek-V3's, except that the generation prompt opens a thinking
// block ("<｜Assistant｜><think>\n") and earlier assistant turns keep only the text after
// "</think>".
absl::string_view DeepseekR1ChatTemplate();

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_CHAT_TEMPLATE_H_
