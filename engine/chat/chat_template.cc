#include "engine/chat_template.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat/ast.h"
#include "engine/chat/interpreter.h"
#include "engine/chat/lexer.h"
#include "engine/chat/parser.h"
#include "engine/chat/value.h"

namespace moeserve::engine {
namespace chat {

struct ParsedTemplate {
  std::string source;
  NodeList program;
};

}  // namespace chat

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(absl::string_view source) {
  auto parsed = std::make_shared<chat::ParsedTemplate>();
  parsed->source = std::string(source);
  MOESERVE_ASSIGN_OR_RETURN(std::vector<chat::Token> tokens, chat::Tokenize(parsed->source));
  MOESERVE_ASSIGN_OR_RETURN(parsed->program, chat::ParseTokens(parsed->source, tokens));
  return ChatTemplate(std::move(parsed));
}

const std::string& ChatTemplate::source() const { return parsed_->source; }

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  if (!context.is_object() && !context.is_null()) {
    return absl::InvalidArgumentError("chat template context must be a JSON object");
  }
  chat::ObjectCycleBreaker cycle_breaker;  // declared first: runs after everything else is gone
  chat::Environment globals;
  chat::SetupGlobals(globals);
  if (context.is_object()) {
    for (const auto& [key, value] : context.items()) {
      if (globals.HasOwn(key)) {
        return absl::InvalidArgumentError(absl::StrCat("chat template variable already declared: ", key));
      }
      globals.Set(key, chat::FromJson(value));
    }
  }
  chat::Interpreter interpreter;
  return interpreter.Render(parsed_->program, globals);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  return Render(nlohmann::ordered_json(context));
}

absl::StatusOr<std::string> ApplyChatTemplate(const ChatTemplate& chat_template, const ChatTemplateInputs& inputs) {
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = inputs.messages;
  context["add_generation_prompt"] = inputs.add_generation_prompt;
  context["bos_token"] = inputs.bos_token;
  context["eos_token"] = inputs.eos_token;
  if (!inputs.extra.is_null() && !inputs.extra.is_object()) {
    return absl::InvalidArgumentError("chat template extra variables must be a JSON object");
  }
  if (inputs.extra.is_object()) {
    for (const auto& [key, value] : inputs.extra.items()) context[key] = value;
  }
  return chat_template.Render(context);
}

absl::StatusOr<std::string> LoadChatTemplate(absl::string_view model_dir) {
  const std::string path = absl::StrCat(model_dir, "/tokenizer_config.json");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::json config = nlohmann::json::parse(buffer.str(), nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    return absl::NotFoundError(absl::StrCat(path, " has no chat_template"));
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (!entry.is_object()) continue;
      auto name = entry.find("name");
      auto text = entry.find("template");
      if (name != entry.end() && name->is_string() && name->get<std::string>() == "default" &&
          text != entry.end() && text->is_string()) {
        return text->get<std::string>();
      }
    }
    return absl::NotFoundError(absl::StrCat(path, " has no \"default\" chat_template"));
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": chat_template must be a string or a list"));
}

}  // namespace moeserve::engine
