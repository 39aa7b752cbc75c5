#ifndef MOESERVE_ENGINE_CHAT_PARSER_H_
#define MOESERVE_ENGINE_CHAT_PARSER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/chat/ast.h"
#include "engine/chat/lexer.h"

namespace moeserve::engine::chat {

// Parses tokens into the program's top-level statements with @huggingface/jinja's grammar and
// operator precedence. `source` is only used to locate errors.
absl::StatusOr<NodeList> ParseTokens(absl::string_view source, const std::vector<Token>& tokens);

}  // namespace moeserve::engine::chat

#endif  // MOESERVE_ENGINE_CHAT_PARSER_H_
