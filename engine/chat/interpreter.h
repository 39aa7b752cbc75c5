#ifndef MOESERVE_ENGINE_CHAT_INTERPRETER_H_
#define MOESERVE_ENGINE_CHAT_INTERPRETER_H_

// Evaluation of a parsed chat template with @huggingface/jinja's runtime semantics.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/chat/ast.h"
#include "engine/chat/value.h"

namespace moeserve::engine::chat {

// A variable scope. Scopes live on the interpreter's stack; values never hold one.
class Environment {
 public:
  explicit Environment(Environment* parent = nullptr) : parent_(parent) {}
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  // Undefined when no enclosing scope declares `name`.
  Value Lookup(const std::string& name) const;
  void Set(const std::string& name, Value value);
  bool HasOwn(const std::string& name) const { return vars_.contains(name); }

 private:
  Environment* parent_;
  absl::flat_hash_map<std::string, Value> vars_;
};

// Declares the reference's globals: true/false/none (and title-case), namespace,
// raise_exception, range, strftime_now.
void SetupGlobals(Environment& env);

// Member access `object.property` / `object[property]` without slices.
absl::StatusOr<Value> GetMember(const Value& object, const Value& property);

// Runs the named `is` test. `arg` is the optional second operand (selectattr's value).
// NotFound for an unknown test.
absl::StatusOr<bool> RunTest(absl::string_view name, const Value& operand, const Value* arg);

class Interpreter {
 public:
  Interpreter() = default;
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  absl::StatusOr<std::string> Render(const NodeList& program, Environment& env);

 private:
  struct Arguments {
    std::vector<Value> positional;
    std::shared_ptr<Object> keywords = std::make_shared<Object>();
  };

  absl::StatusOr<Value> Evaluate(const Node& node, Environment& env);
  absl::StatusOr<Value> EvaluateNode(const Node& node, Environment& env);
  absl::StatusOr<std::string> EvaluateBlock(const NodeList& body, Environment& env);
  absl::StatusOr<Arguments> EvaluateArguments(const NodeList& args, Environment& env);
  absl::StatusOr<Value> EvaluateBinary(const Node& node, Environment& env);
  absl::StatusOr<Value> EvaluateMember(const Node& node, Environment& env);
  absl::StatusOr<Value> EvaluateSlice(const Value& object, const Node& slice, Environment& env);
  absl::StatusOr<Value> EvaluateCall(const Node& node, Environment& env);
  absl::StatusOr<Value> EvaluateSet(const Node& node, Environment& env);
  absl::StatusOr<Value> EvaluateFor(const Node& node, Environment& env);
  absl::StatusOr<Value> EvaluateMacro(const Node& node, Environment& env);
  absl::StatusOr<Value> EvaluateCallBlock(const Node& node, Environment& env);
  absl::StatusOr<Value> ApplyFilter(const Value& operand, const Node& filter, Environment& env);
  absl::StatusOr<Value> ApplyNamedFilter(const Value& operand, const std::string& name);
  absl::StatusOr<Value> ApplyCallFilter(const Value& operand, const Node& call, Environment& env);
  absl::StatusOr<Value> SelectAttr(const Value& operand, const Node& call, Environment& env);

  int depth_ = 0;
  int64_t iterations_ = 0;
};

// Runtime errors are InvalidArgument with this prefix.
absl::Status RuntimeError(absl::string_view message);

}  // namespace moeserve::engine::chat

#endif  // MOESERVE_ENGINE_CHAT_INTERPRETER_H_
