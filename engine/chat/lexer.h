#ifndef MOESERVE_ENGINE_CHAT_LEXER_H_
#define MOESERVE_ENGINE_CHAT_LEXER_H_

// Preprocessing (whitespace control, trim_blocks, lstrip_blocks) and tokenization of chat
// templates, token for token as @huggingface/jinja does it.

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moeserve::engine::chat {

enum class TokenType {
  kText,
  kNumericLiteral,
  kStringLiteral,
  kIdentifier,
  kEquals,
  kOpenParen,
  kCloseParen,
  kOpenStatement,
  kCloseStatement,
  kOpenExpression,
  kCloseExpression,
  kOpenSquareBracket,
  kCloseSquareBracket,
  kOpenCurlyBracket,
  kCloseCurlyBracket,
  kComma,
  kDot,
  kColon,
  kPipe,
  kAdditiveBinaryOperator,
  kMultiplicativeBinaryOperator,
  kComparisonBinaryOperator,
  kUnaryOperator,
  kComment,
};

const char* TokenTypeName(TokenType type);

struct Token {
  TokenType type;
  std::string value;
  size_t offset;  // byte offset in the original (unpreprocessed) source
};

// The source after preprocessing; origin[i] is the original offset of text[i].
struct PreprocessedSource {
  std::string text;
  std::vector<size_t> origin;
};

// Drops one trailing newline, applies lstrip_blocks and trim_blocks, the `-` whitespace
// control markers and removes {% generation %} tags.
PreprocessedSource Preprocess(absl::string_view source);

absl::StatusOr<std::vector<Token>> Tokenize(absl::string_view source);

// A syntax error located at `offset` of `source`: "... (line L, column C)".
absl::Status SyntaxErrorAt(absl::string_view source, size_t offset, absl::string_view message);

}  // namespace moeserve::engine::chat

#endif  // MOESERVE_ENGINE_CHAT_LEXER_H_
