#include "engine/chat/lexer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/chat/js_text.h"

namespace moeserve::engine::chat {
namespace {

constexpr std::pair<absl::string_view, TokenType> kMappingTable[] = {
    {"{%", TokenType::kOpenStatement},
    {"%}", TokenType::kCloseStatement},
    {"{{", TokenType::kOpenExpression},
    {"}}", TokenType::kCloseExpression},
    {"(", TokenType::kOpenParen},
    {")", TokenType::kCloseParen},
    {"{", TokenType::kOpenCurlyBracket},
    {"}", TokenType::kCloseCurlyBracket},
    {"[", TokenType::kOpenSquareBracket},
    {"]", TokenType::kCloseSquareBracket},
    {",", TokenType::kComma},
    {".", TokenType::kDot},
    {":", TokenType::kColon},
    {"|", TokenType::kPipe},
    {"<=", TokenType::kComparisonBinaryOperator},
    {">=", TokenType::kComparisonBinaryOperator},
    {"==", TokenType::kComparisonBinaryOperator},
    {"!=", TokenType::kComparisonBinaryOperator},
    {"<", TokenType::kComparisonBinaryOperator},
    {">", TokenType::kComparisonBinaryOperator},
    {"+", TokenType::kAdditiveBinaryOperator},
    {"-", TokenType::kAdditiveBinaryOperator},
    {"~", TokenType::kAdditiveBinaryOperator},
    {"*", TokenType::kMultiplicativeBinaryOperator},
    {"/", TokenType::kMultiplicativeBinaryOperator},
    {"%", TokenType::kMultiplicativeBinaryOperator},
    {"=", TokenType::kEquals},
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsWord(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

class Lexer {
 public:
  explicit Lexer(absl::string_view source) : source_(source), src_(Preprocess(source)) {}

  absl::StatusOr<std::vector<Token>> Run();

 private:
  const std::string& s() const { return src_.text; }
  char At(size_t i) const { return i < s().size() ? s()[i] : '\0'; }
  size_t Origin(size_t i) const {
    if (src_.origin.empty()) return 0;
    return src_.origin[std::min(i, src_.origin.size() - 1)];
  }
  absl::Status Error(size_t i, absl::string_view message) const {
    return SyntaxErrorAt(source_, Origin(i), message);
  }
  void Push(TokenType type, std::string value, size_t at) {
    tokens_.push_back(Token{type, std::move(value), Origin(at)});
  }
  absl::StatusOr<std::string> ConsumeString(char quote);
  absl::StatusOr<std::string> ConsumeDigits();

  absl::string_view source_;
  PreprocessedSource src_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
};

absl::StatusOr<std::string> Lexer::ConsumeString(char quote) {
  std::string out;
  while (pos_ >= s().size() || s()[pos_] != quote) {
    if (pos_ >= s().size()) return Error(pos_, "Unexpected end of input");
    if (s()[pos_] == '\\') {
      ++pos_;
      if (pos_ >= s().size()) return Error(pos_, "Unexpected end of input");
      const char escaped = s()[pos_++];
      switch (escaped) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        default:
          return Error(pos_ - 1, absl::StrCat("Unexpected escaped character: ", std::string(1, escaped)));
      }
      continue;
    }
    out += s()[pos_++];
    if (pos_ >= s().size()) return Error(pos_, "Unexpected end of input");
  }
  return out;
}

absl::StatusOr<std::string> Lexer::ConsumeDigits() {
  std::string out;
  while (IsDigit(At(pos_))) {
    out += s()[pos_++];
    if (pos_ >= s().size()) return Error(pos_, "Unexpected end of input");
  }
  return out;
}

absl::StatusOr<std::vector<Token>> Lexer::Run() {
  int curly_depth = 0;
  while (pos_ < s().size()) {
    const bool text_mode =
        tokens_.empty() || tokens_.back().type == TokenType::kCloseStatement ||
        tokens_.back().type == TokenType::kCloseExpression || tokens_.back().type == TokenType::kComment;
    if (text_mode) {
      const size_t start = pos_;
      while (pos_ < s().size() &&
             !(s()[pos_] == '{' && (At(pos_ + 1) == '%' || At(pos_ + 1) == '{' || At(pos_ + 1) == '#'))) {
        ++pos_;
      }
      if (pos_ > start) {
        Push(TokenType::kText, s().substr(start, pos_ - start), start);
        continue;
      }
    }
    if (At(pos_) == '{' && At(pos_ + 1) == '#') {
      const size_t start = pos_;
      pos_ += 2;
      while (At(pos_) != '#' || At(pos_ + 1) != '}') {
        if (pos_ + 2 >= s().size()) return Error(start, "Missing end of comment tag");
        ++pos_;
      }
      Push(TokenType::kComment, s().substr(start + 2, pos_ - start - 2), start);
      pos_ += 2;
      continue;
    }
    // Whitespace inside tags.
    while (pos_ < s().size()) {
      size_t next = pos_;
      if (!IsJsWhitespace(DecodeUtf8(s(), &next))) break;
      pos_ = next;
      if (pos_ >= s().size()) return Error(pos_, "Unexpected end of input");
    }
    const char c = At(pos_);
    if (c == '-' || c == '+') {
      if (tokens_.empty() || tokens_.back().type == TokenType::kText) {
        return Error(pos_, absl::StrCat("Unexpected character: ", std::string(1, c)));
      }
      switch (tokens_.back().type) {
        case TokenType::kIdentifier:
        case TokenType::kNumericLiteral:
        case TokenType::kStringLiteral:
        case TokenType::kCloseParen:
        case TokenType::kCloseSquareBracket:
          break;  // binary operator
        default: {
          const size_t start = pos_++;
          absl::StatusOr<std::string> digits = ConsumeDigits();
          if (!digits.ok()) return digits.status();
          Push(digits->empty() ? TokenType::kUnaryOperator : TokenType::kNumericLiteral,
               absl::StrCat(std::string(1, c), *digits), start);
          continue;
        }
      }
    }
    bool matched = false;
    for (const auto& [seq, type] : kMappingTable) {
      if (seq == "}}" && curly_depth > 0) continue;
      if (absl::string_view(s()).substr(pos_, seq.size()) != seq) continue;
      Push(type, std::string(seq), pos_);
      if (type == TokenType::kOpenExpression) {
        curly_depth = 0;
      } else if (type == TokenType::kOpenCurlyBracket) {
        ++curly_depth;
      } else if (type == TokenType::kCloseCurlyBracket) {
        --curly_depth;
      }
      pos_ += seq.size();
      matched = true;
      break;
    }
    if (matched) continue;
    if (c == '\'' || c == '"') {
      const size_t start = pos_++;
      absl::StatusOr<std::string> str = ConsumeString(c);
      if (!str.ok()) return str.status();
      Push(TokenType::kStringLiteral, *std::move(str), start);
      ++pos_;
      continue;
    }
    if (IsDigit(c)) {
      const size_t start = pos_;
      absl::StatusOr<std::string> num = ConsumeDigits();
      if (!num.ok()) return num.status();
      if (At(pos_) == '.' && IsDigit(At(pos_ + 1))) {
        ++pos_;
        absl::StatusOr<std::string> frac = ConsumeDigits();
        if (!frac.ok()) return frac.status();
        *num = absl::StrCat(*num, ".", *frac);
      }
      Push(TokenType::kNumericLiteral, *std::move(num), start);
      continue;
    }
    if (IsWord(c)) {
      const size_t start = pos_;
      std::string word;
      while (IsWord(At(pos_))) {
        word += s()[pos_++];
        if (pos_ >= s().size()) return Error(pos_, "Unexpected end of input");
      }
      Push(TokenType::kIdentifier, std::move(word), start);
      continue;
    }
    size_t end = pos_;
    DecodeUtf8(s(), &end);
    return Error(pos_, absl::StrCat("Unexpected character: ", s().substr(pos_, end - pos_)));
  }
  return std::move(tokens_);
}

}  // namespace

const char* TokenTypeName(TokenType type) {
  switch (type) {
    case TokenType::kText: return "Text";
    case TokenType::kNumericLiteral: return "NumericLiteral";
    case TokenType::kStringLiteral: return "StringLiteral";
    case TokenType::kIdentifier: return "Identifier";
    case TokenType::kEquals: return "Equals";
    case TokenType::kOpenParen: return "OpenParen";
    case TokenType::kCloseParen: return "CloseParen";
    case TokenType::kOpenStatement: return "OpenStatement";
    case TokenType::kCloseStatement: return "CloseStatement";
    case TokenType::kOpenExpression: return "OpenExpression";
    case TokenType::kCloseExpression: return "CloseExpression";
    case TokenType::kOpenSquareBracket: return "OpenSquareBracket";
    case TokenType::kCloseSquareBracket: return "CloseSquareBracket";
    case TokenType::kOpenCurlyBracket: return "OpenCurlyBracket";
    case TokenType::kCloseCurlyBracket: return "CloseCurlyBracket";
    case TokenType::kComma: return "Comma";
    case TokenType::kDot: return "Dot";
    case TokenType::kColon: return "Colon";
    case TokenType::kPipe: return "Pipe";
    case TokenType::kAdditiveBinaryOperator: return "AdditiveBinaryOperator";
    case TokenType::kMultiplicativeBinaryOperator: return "MultiplicativeBinaryOperator";
    case TokenType::kComparisonBinaryOperator: return "ComparisonBinaryOperator";
    case TokenType::kUnaryOperator: return "UnaryOperator";
    case TokenType::kComment: return "Comment";
  }
  return "Unknown";
}

absl::StatusOr<std::vector<Token>> Tokenize(absl::string_view source) {
  return Lexer(source).Run();
}

absl::Status SyntaxErrorAt(absl::string_view source, size_t offset, absl::string_view message) {
  offset = std::min(offset, source.size());
  size_t line = 1, column = 1;
  for (size_t i = 0; i < offset; ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(source[i]) & 0xC0) != 0x80) {
      ++column;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("chat template syntax error: ", message, " (line ", line, ", column ", column, ")"));
}

}  // namespace moeserve::engine::chat
