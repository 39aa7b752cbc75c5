#include "engine/chat/parser.h"

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace moeserve::engine::chat {
namespace {

constexpr int kMaxNesting = 150;

class Parser {
 public:
  Parser(absl::string_view source, const std::vector<Token>& tokens)
      : source_(source), tokens_(tokens) {}

  absl::StatusOr<NodeList> Program() {
    NodeList body;
    while (pos_ < tokens_.size()) {
      MOESERVE_ASSIGN_OR_RETURN(NodePtr node, Any());
      body.push_back(std::move(node));
    }
    return body;
  }

 private:
  using Result = absl::StatusOr<NodePtr>;

  // Counts nesting depth so pathological input cannot exhaust the stack.
  class DepthGuard {
   public:
    explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
    ~DepthGuard() { --*depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    int* depth_;
  };

  size_t Offset() const {
    if (pos_ < tokens_.size()) return tokens_[pos_].offset;
    return source_.size();
  }
  absl::Status Error(absl::string_view message) const {
    return SyntaxErrorAt(source_, Offset(), message);
  }
  NodePtr Make(NodeKind kind, size_t at) const { return std::make_unique<Node>(kind, at); }

  bool Is(TokenType type, size_t ahead = 0) const {
    return pos_ + ahead < tokens_.size() && tokens_[pos_ + ahead].type == type;
  }
  bool IsIdentifier(absl::string_view name, size_t ahead = 0) const {
    return Is(TokenType::kIdentifier, ahead) && tokens_[pos_ + ahead].value == name;
  }
  bool IsStatement(std::initializer_list<absl::string_view> names) const {
    if (!Is(TokenType::kOpenStatement) || !Is(TokenType::kIdentifier, 1)) return false;
    for (absl::string_view name : names) {
      if (tokens_[pos_ + 1].value == name) return true;
    }
    return false;
  }
  absl::Status Expect(TokenType type, absl::string_view what) {
    if (!Is(type)) {
      const char* got = pos_ < tokens_.size() ? TokenTypeName(tokens_[pos_].type) : "end of template";
      return Error(absl::StrCat("Expected ", what, ", got ", got));
    }
    ++pos_;
    return absl::OkStatus();
  }
  absl::Status ExpectIdentifier(absl::string_view name) {
    if (!IsIdentifier(name)) return Error(absl::StrCat("Expected ", name));
    ++pos_;
    return absl::OkStatus();
  }
  // Statements until one of `names` opens; the terminator is left unconsumed.
  absl::StatusOr<NodeList> BodyUntil(std::initializer_list<absl::string_view> names) {
    NodeList body;
    while (!IsStatement(names)) {
      if (pos_ >= tokens_.size()) {
        return Error(absl::StrCat("Unexpected end of template, expected {% ", *names.begin(), " %}"));
      }
      MOESERVE_ASSIGN_OR_RETURN(NodePtr node, Any());
      body.push_back(std::move(node));
    }
    return body;
  }
  absl::Status ExpectEnd(absl::string_view name) {
    MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kOpenStatement, "{%"));
    MOESERVE_RETURN_IF_ERROR(ExpectIdentifier(name));
    return Expect(TokenType::kCloseStatement, "%}");
  }

  Result Any();
  Result Statement();
  Result Set(size_t at);
  Result If(size_t at);
  Result Macro(size_t at);
  Result For(size_t at);
  Result CallBlock(size_t at);
  Result FilterBlock(size_t at);
  Result ExpressionSequence(bool primary);
  Result Expression();
  Result IfExpression();
  Result LogicalOr();
  Result LogicalAnd();
  Result LogicalNot();
  Result Comparison();
  Result Additive();
  Result Multiplicative();
  Result TestExpr();
  Result FilterExpr();
  Result CallMember();
  Result CallExpr(NodePtr callee);
  absl::StatusOr<NodeList> Args();
  Result MemberArgs();
  Result Member(NodePtr object);
  Result Primary();

  absl::string_view source_;
  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

Parser::Result Parser::Any() {
  const Token& token = tokens_[pos_];
  switch (token.type) {
    case TokenType::kComment: {
      NodePtr node = Make(NodeKind::kComment, token.offset);
      node->str = token.value;
      ++pos_;
      return node;
    }
    case TokenType::kText: {
      NodePtr node = Make(NodeKind::kText, token.offset);
      node->str = token.value;
      ++pos_;
      return node;
    }
    case TokenType::kOpenStatement:
      return Statement();
    case TokenType::kOpenExpression: {
      ++pos_;
      MOESERVE_ASSIGN_OR_RETURN(NodePtr expr, Expression());
      MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseExpression, "}}"));
      return expr;
    }
    default:
      return Error(absl::StrCat("Unexpected token type: ", TokenTypeName(token.type)));
  }
}

Parser::Result Parser::Statement() {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxNesting) return Error("Template nested too deeply");
  const size_t at = Offset();
  ++pos_;  // {%
  if (!Is(TokenType::kIdentifier)) {
    return Error(pos_ < tokens_.size()
                     ? absl::StrCat("Unknown statement, got ", TokenTypeName(tokens_[pos_].type))
                     : std::string("Unexpected end of template"));
  }
  const std::string name = tokens_[pos_].value;
  if (name == "set") {
    ++pos_;
    return Set(at);
  }
  if (name == "if") {
    ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr node, If(at));
    MOESERVE_RETURN_IF_ERROR(ExpectEnd("endif"));
    return node;
  }
  if (name == "macro") {
    ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr node, Macro(at));
    MOESERVE_RETURN_IF_ERROR(ExpectEnd("endmacro"));
    return node;
  }
  if (name == "for") {
    ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr node, For(at));
    MOESERVE_RETURN_IF_ERROR(ExpectEnd("endfor"));
    return node;
  }
  if (name == "call") {
    ++pos_;
    return CallBlock(at);
  }
  if (name == "filter") {
    ++pos_;
    return FilterBlock(at);
  }
  if (name == "break" || name == "continue") {
    ++pos_;
    MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
    return Make(name == "break" ? NodeKind::kBreak : NodeKind::kContinue, at);
  }
  return Error(absl::StrCat("Unknown statement type: ", name));
}

Parser::Result Parser::Set(size_t at) {
  NodePtr node = Make(NodeKind::kSet, at);
  MOESERVE_ASSIGN_OR_RETURN(node->a, ExpressionSequence(false));
  if (Is(TokenType::kEquals)) {
    ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(node->b, ExpressionSequence(false));
  } else {
    MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
    MOESERVE_ASSIGN_OR_RETURN(node->list, BodyUntil({"endset"}));
    MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kOpenStatement, "{%"));
    MOESERVE_RETURN_IF_ERROR(ExpectIdentifier("endset"));
  }
  MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
  return node;
}

Parser::Result Parser::If(size_t at) {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxNesting) return Error("Template nested too deeply");
  NodePtr node = Make(NodeKind::kIf, at);
  MOESERVE_ASSIGN_OR_RETURN(node->a, Expression());
  MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
  MOESERVE_ASSIGN_OR_RETURN(node->list, BodyUntil({"elif", "else", "endif"}));
  if (IsStatement({"elif"})) {
    const size_t elif_at = Offset();
    pos_ += 2;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr nested, If(elif_at));
    node->list2.push_back(std::move(nested));
  } else if (IsStatement({"else"})) {
    pos_ += 2;
    MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
    MOESERVE_ASSIGN_OR_RETURN(node->list2, BodyUntil({"endif"}));
  }
  return node;
}

Parser::Result Parser::Macro(size_t at) {
  NodePtr node = Make(NodeKind::kMacro, at);
  MOESERVE_ASSIGN_OR_RETURN(NodePtr name, Primary());
  if (name->kind != NodeKind::kIdentifier) return Error("Expected identifier following macro statement");
  node->str = name->str;
  MOESERVE_ASSIGN_OR_RETURN(node->list, Args());
  MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
  MOESERVE_ASSIGN_OR_RETURN(node->list2, BodyUntil({"endmacro"}));
  return node;
}

Parser::Result Parser::For(size_t at) {
  NodePtr node = Make(NodeKind::kFor, at);
  MOESERVE_ASSIGN_OR_RETURN(node->a, ExpressionSequence(true));
  if (node->a->kind != NodeKind::kIdentifier && node->a->kind != NodeKind::kTupleLiteral) {
    return Error("Expected identifier/tuple for the loop variable");
  }
  if (!IsIdentifier("in")) return Error("Expected `in` keyword following loop variable");
  ++pos_;
  MOESERVE_ASSIGN_OR_RETURN(node->b, Expression());
  MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
  MOESERVE_ASSIGN_OR_RETURN(node->list, BodyUntil({"endfor", "else"}));
  if (IsStatement({"else"})) {
    pos_ += 2;
    MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
    MOESERVE_ASSIGN_OR_RETURN(node->list2, BodyUntil({"endfor"}));
  }
  return node;
}

Parser::Result Parser::CallBlock(size_t at) {
  NodePtr node = Make(NodeKind::kCallBlock, at);
  if (Is(TokenType::kOpenParen)) {
    node->flag = true;
    MOESERVE_ASSIGN_OR_RETURN(node->list, Args());
  }
  const size_t callee_at = Offset();
  MOESERVE_ASSIGN_OR_RETURN(NodePtr callee, Primary());
  if (callee->kind != NodeKind::kIdentifier) return Error("Expected identifier following call statement");
  NodePtr call = Make(NodeKind::kCall, callee_at);
  call->a = std::move(callee);
  MOESERVE_ASSIGN_OR_RETURN(call->list, Args());
  node->a = std::move(call);
  MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
  MOESERVE_ASSIGN_OR_RETURN(node->list2, BodyUntil({"endcall"}));
  MOESERVE_RETURN_IF_ERROR(ExpectEnd("endcall"));
  return node;
}

Parser::Result Parser::FilterBlock(size_t at) {
  NodePtr node = Make(NodeKind::kFilterBlock, at);
  MOESERVE_ASSIGN_OR_RETURN(NodePtr filter, Primary());
  if (filter->kind == NodeKind::kIdentifier && Is(TokenType::kOpenParen)) {
    MOESERVE_ASSIGN_OR_RETURN(filter, CallExpr(std::move(filter)));
  }
  node->a = std::move(filter);
  MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "%}"));
  MOESERVE_ASSIGN_OR_RETURN(node->list, BodyUntil({"endfilter"}));
  MOESERVE_RETURN_IF_ERROR(ExpectEnd("endfilter"));
  return node;
}

Parser::Result Parser::ExpressionSequence(bool primary) {
  const size_t at = Offset();
  auto parse_one = [&]() { return primary ? Primary() : Expression(); };
  MOESERVE_ASSIGN_OR_RETURN(NodePtr first, parse_one());
  if (!Is(TokenType::kComma)) return first;
  NodePtr tuple = Make(NodeKind::kTupleLiteral, at);
  tuple->list.push_back(std::move(first));
  while (true) {
    ++pos_;  // ,
    MOESERVE_ASSIGN_OR_RETURN(NodePtr next, parse_one());
    tuple->list.push_back(std::move(next));
    if (!Is(TokenType::kComma)) break;
  }
  return tuple;
}

Parser::Result Parser::Expression() {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxNesting) return Error("Expression nested too deeply");
  return IfExpression();
}

Parser::Result Parser::IfExpression() {
  const size_t at = Offset();
  MOESERVE_ASSIGN_OR_RETURN(NodePtr a, LogicalOr());
  if (!IsIdentifier("if")) return a;
  ++pos_;
  MOESERVE_ASSIGN_OR_RETURN(NodePtr test, LogicalOr());
  if (IsIdentifier("else")) {
    ++pos_;
    DepthGuard guard(&depth_);
    if (depth_ > kMaxNesting) return Error("Expression nested too deeply");
    MOESERVE_ASSIGN_OR_RETURN(NodePtr otherwise, IfExpression());
    NodePtr node = Make(NodeKind::kTernary, at);
    node->a = std::move(test);
    node->b = std::move(a);
    node->c = std::move(otherwise);
    return node;
  }
  NodePtr node = Make(NodeKind::kSelect, at);
  node->a = std::move(a);
  node->b = std::move(test);
  return node;
}

Parser::Result Parser::LogicalOr() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr left, LogicalAnd());
  while (IsIdentifier("or")) {
    const size_t at = Offset();
    ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr right, LogicalAnd());
    NodePtr node = Make(NodeKind::kBinary, at);
    node->str = "or";
    node->a = std::move(left);
    node->b = std::move(right);
    left = std::move(node);
  }
  return left;
}

Parser::Result Parser::LogicalAnd() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr left, LogicalNot());
  while (IsIdentifier("and")) {
    const size_t at = Offset();
    ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr right, LogicalNot());
    NodePtr node = Make(NodeKind::kBinary, at);
    node->str = "and";
    node->a = std::move(left);
    node->b = std::move(right);
    left = std::move(node);
  }
  return left;
}

Parser::Result Parser::LogicalNot() {
  NodePtr result;
  while (IsIdentifier("not")) {
    const size_t at = Offset();
    ++pos_;
    DepthGuard guard(&depth_);
    if (depth_ > kMaxNesting) return Error("Expression nested too deeply");
    MOESERVE_ASSIGN_OR_RETURN(NodePtr arg, LogicalNot());
    result = Make(NodeKind::kNot, at);
    result->a = std::move(arg);
  }
  if (result) return result;
  return Comparison();
}

Parser::Result Parser::Comparison() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr left, Additive());
  while (true) {
    const size_t at = Offset();
    std::string op;
    if (IsIdentifier("not") && IsIdentifier("in", 1)) {
      op = "not in";
      pos_ += 2;
    } else if (IsIdentifier("in")) {
      op = "in";
      ++pos_;
    } else if (Is(TokenType::kComparisonBinaryOperator)) {
      op = tokens_[pos_++].value;
    } else {
      break;
    }
    MOESERVE_ASSIGN_OR_RETURN(NodePtr right, Additive());
    NodePtr node = Make(NodeKind::kBinary, at);
    node->str = std::move(op);
    node->a = std::move(left);
    node->b = std::move(right);
    left = std::move(node);
  }
  return left;
}

Parser::Result Parser::Additive() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr left, Multiplicative());
  while (Is(TokenType::kAdditiveBinaryOperator)) {
    const size_t at = Offset();
    std::string op = tokens_[pos_++].value;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr right, Multiplicative());
    NodePtr node = Make(NodeKind::kBinary, at);
    node->str = std::move(op);
    node->a = std::move(left);
    node->b = std::move(right);
    left = std::move(node);
  }
  return left;
}

Parser::Result Parser::Multiplicative() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr left, TestExpr());
  while (Is(TokenType::kMultiplicativeBinaryOperator)) {
    const size_t at = Offset();
    std::string op = tokens_[pos_++].value;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr right, TestExpr());
    NodePtr node = Make(NodeKind::kBinary, at);
    node->str = std::move(op);
    node->a = std::move(left);
    node->b = std::move(right);
    left = std::move(node);
  }
  return left;
}

Parser::Result Parser::TestExpr() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr operand, FilterExpr());
  while (IsIdentifier("is")) {
    const size_t at = Offset();
    ++pos_;
    const bool negate = IsIdentifier("not");
    if (negate) ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr test, Primary());
    if (test->kind != NodeKind::kIdentifier) return Error("Expected identifier for the test");
    NodePtr node = Make(NodeKind::kTest, at);
    node->a = std::move(operand);
    node->str = test->str;
    node->flag = negate;
    operand = std::move(node);
  }
  return operand;
}

Parser::Result Parser::FilterExpr() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr operand, CallMember());
  while (Is(TokenType::kPipe)) {
    const size_t at = Offset();
    ++pos_;
    MOESERVE_ASSIGN_OR_RETURN(NodePtr filter, Primary());
    if (filter->kind != NodeKind::kIdentifier) return Error("Expected identifier for the filter");
    if (Is(TokenType::kOpenParen)) {
      MOESERVE_ASSIGN_OR_RETURN(filter, CallExpr(std::move(filter)));
    }
    NodePtr node = Make(NodeKind::kFilter, at);
    node->a = std::move(operand);
    node->b = std::move(filter);
    operand = std::move(node);
  }
  return operand;
}

Parser::Result Parser::CallMember() {
  MOESERVE_ASSIGN_OR_RETURN(NodePtr primary, Primary());
  MOESERVE_ASSIGN_OR_RETURN(NodePtr member, Member(std::move(primary)));
  if (Is(TokenType::kOpenParen)) return CallExpr(std::move(member));
  return member;
}

Parser::Result Parser::CallExpr(NodePtr callee) {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxNesting) return Error("Expression nested too deeply");
  NodePtr call = Make(NodeKind::kCall, Offset());
  call->a = std::move(callee);
  MOESERVE_ASSIGN_OR_RETURN(call->list, Args());
  MOESERVE_ASSIGN_OR_RETURN(NodePtr expr, Member(std::move(call)));
  if (Is(TokenType::kOpenParen)) return CallExpr(std::move(expr));
  return expr;
}

absl::StatusOr<NodeList> Parser::Args() {
  MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kOpenParen, "( for arguments list"));
  NodeList args;
  while (!Is(TokenType::kCloseParen)) {
    if (pos_ >= tokens_.size()) return Error("Unexpected end of template in arguments list");
    const size_t at = Offset();
    NodePtr arg;
    if (Is(TokenType::kMultiplicativeBinaryOperator) && tokens_[pos_].value == "*") {
      ++pos_;
      arg = Make(NodeKind::kSpread, at);
      MOESERVE_ASSIGN_OR_RETURN(arg->a, Expression());
    } else {
      MOESERVE_ASSIGN_OR_RETURN(arg, Expression());
      if (Is(TokenType::kEquals)) {
        ++pos_;
        if (arg->kind != NodeKind::kIdentifier) return Error("Expected identifier for keyword argument");
        NodePtr kwarg = Make(NodeKind::kKeywordArgument, at);
        kwarg->str = arg->str;
        MOESERVE_ASSIGN_OR_RETURN(kwarg->a, Expression());
        arg = std::move(kwarg);
      }
    }
    args.push_back(std::move(arg));
    if (Is(TokenType::kComma)) ++pos_;
  }
  ++pos_;  // )
  return args;
}

Parser::Result Parser::MemberArgs() {
  const size_t at = Offset();
  std::vector<NodePtr> slices;
  bool is_slice = false;
  while (!Is(TokenType::kCloseSquareBracket)) {
    if (pos_ >= tokens_.size()) return Error("Unexpected end of template in subscript");
    if (Is(TokenType::kColon)) {
      slices.push_back(nullptr);
      ++pos_;
      is_slice = true;
    } else {
      MOESERVE_ASSIGN_OR_RETURN(NodePtr expr, Expression());
      slices.push_back(std::move(expr));
      if (Is(TokenType::kColon)) {
        ++pos_;
        is_slice = true;
      }
    }
  }
  if (slices.empty()) return Error("Expected at least one argument for member/slice expression");
  if (!is_slice) return std::move(slices[0]);
  if (slices.size() > 3) return Error("Expected 0-3 arguments for slice expression");
  NodePtr node = Make(NodeKind::kSlice, at);
  slices.resize(3);
  node->a = std::move(slices[0]);
  node->b = std::move(slices[1]);
  node->c = std::move(slices[2]);
  return node;
}

Parser::Result Parser::Member(NodePtr object) {
  while (Is(TokenType::kDot) || Is(TokenType::kOpenSquareBracket)) {
    const size_t at = Offset();
    const bool computed = Is(TokenType::kOpenSquareBracket);
    ++pos_;
    NodePtr property;
    if (computed) {
      MOESERVE_ASSIGN_OR_RETURN(property, MemberArgs());
      MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseSquareBracket, "]"));
    } else {
      MOESERVE_ASSIGN_OR_RETURN(property, Primary());
      if (property->kind != NodeKind::kIdentifier) return Error("Expected identifier following dot operator");
    }
    NodePtr node = Make(NodeKind::kMember, at);
    node->a = std::move(object);
    node->b = std::move(property);
    node->flag = computed;
    object = std::move(node);
  }
  return object;
}

Parser::Result Parser::Primary() {
  if (pos_ >= tokens_.size()) return Error("Unexpected end of template");
  const Token& token = tokens_[pos_++];
  switch (token.type) {
    case TokenType::kNumericLiteral: {
      const bool is_float = token.value.find('.') != std::string::npos;
      NodePtr node = Make(is_float ? NodeKind::kFloatLiteral : NodeKind::kIntegerLiteral, token.offset);
      node->number = std::strtod(token.value.c_str(), nullptr);
      return node;
    }
    case TokenType::kStringLiteral: {
      NodePtr node = Make(NodeKind::kStringLiteral, token.offset);
      node->str = token.value;
      while (Is(TokenType::kStringLiteral)) node->str += tokens_[pos_++].value;
      return node;
    }
    case TokenType::kIdentifier: {
      NodePtr node = Make(NodeKind::kIdentifier, token.offset);
      node->str = token.value;
      return node;
    }
    case TokenType::kOpenParen: {
      MOESERVE_ASSIGN_OR_RETURN(NodePtr expr, ExpressionSequence(false));
      MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kCloseParen, ")"));
      return expr;
    }
    case TokenType::kOpenSquareBracket: {
      NodePtr node = Make(NodeKind::kArrayLiteral, token.offset);
      while (!Is(TokenType::kCloseSquareBracket)) {
        MOESERVE_ASSIGN_OR_RETURN(NodePtr item, Expression());
        node->list.push_back(std::move(item));
        if (Is(TokenType::kComma)) ++pos_;
      }
      ++pos_;
      return node;
    }
    case TokenType::kOpenCurlyBracket: {
      NodePtr node = Make(NodeKind::kObjectLiteral, token.offset);
      while (!Is(TokenType::kCloseCurlyBracket)) {
        MOESERVE_ASSIGN_OR_RETURN(NodePtr key, Expression());
        MOESERVE_RETURN_IF_ERROR(Expect(TokenType::kColon, ": between key and value in object literal"));
        MOESERVE_ASSIGN_OR_RETURN(NodePtr value, Expression());
        node->list.push_back(std::move(key));
        node->list2.push_back(std::move(value));
        if (Is(TokenType::kComma)) ++pos_;
      }
      ++pos_;
      return node;
    }
    default:
      --pos_;
      return Error(absl::StrCat("Unexpected token: ", TokenTypeName(token.type)));
  }
}

}  // namespace

absl::StatusOr<NodeList> ParseTokens(absl::string_view source, const std::vector<Token>& tokens) {
  return Parser(source, tokens).Program();
}

}  // namespace moeserve::engine::chat
