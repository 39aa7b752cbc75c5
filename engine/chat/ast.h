#ifndef MOESERVE_ENGINE_CHAT_AST_H_
#define MOESERVE_ENGINE_CHAT_AST_H_

// The syntax tree of a chat template. One node type with a kind tag keeps the tree small; the
// comment on each kind says which fields it uses.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace moeserve::engine::chat {

enum class NodeKind {
  kText,           // str
  kStringLiteral,  // str
  kIntegerLiteral,  // number
  kFloatLiteral,    // number
  kIdentifier,      // str
  kArrayLiteral,    // list
  kTupleLiteral,    // list
  kObjectLiteral,   // list (keys), list2 (values)
  kMember,          // a (object), b (property), flag (computed)
  kSlice,           // a, b, c (start, stop, step; each may be null)
  kCall,            // a (callee), list (arguments)
  kKeywordArgument,  // str (name), a (value)
  kSpread,           // a
  kNot,              // a
  kBinary,           // str (operator), a, b
  kFilter,           // a (operand), b (Identifier or Call)
  kTest,             // a (operand), str (test name), flag (negated)
  kSelect,           // a (value), b (condition): `a if b` without else
  kTernary,          // a (condition), b (if true), c (if false)
  kIf,               // a (test), list (body), list2 (alternate)
  kFor,              // a (loop variable: Identifier or Tuple), b (iterable), list, list2 (else)
  kSet,              // a (target), b (value, or null for a block set), list (block body)
  kMacro,            // str (name), list (parameters), list2 (body)
  kCallBlock,        // a (Call), list (caller parameters), list2 (body)
  kFilterBlock,      // a (Identifier or Call), list (body)
  kBreak,
  kContinue,
  kComment,
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Node {
  explicit Node(NodeKind k, size_t at) : kind(k), offset(at) {}

  NodeKind kind;
  size_t offset;  // source offset, for error messages
  std::string str;
  double number = 0;
  bool flag = false;
  NodePtr a, b, c;
  NodeList list, list2;
};

}  // namespace moeserve::engine::chat

#endif  // MOESERVE_ENGINE_CHAT_AST_H_
