#include "engine/chat/interpreter.h"

#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat/js_text.h"

namespace moeserve::engine::chat {
namespace {

constexpr int kMaxDepth = 300;
constexpr int64_t kMaxIterations = 2'000'000;
constexpr size_t kMaxOutputBytes = size_t{64} << 20;

// {% break %} and {% continue %} unwind like the reference's control exceptions.
constexpr absl::string_view kBreakSignal = "\x01jinja-break";
constexpr absl::string_view kContinueSignal = "\x01jinja-continue";

bool IsSignal(const absl::Status& status, absl::string_view signal) {
  return status.code() == absl::StatusCode::kAborted && status.message() == signal;
}

class DepthGuard {
 public:
  explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
  ~DepthGuard() { --*depth_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;

 private:
  int* depth_;
};

// utils.ts slice(): Python-style slicing of `size` elements; returns the chosen indices.
std::vector<int64_t> SliceIndices(int64_t size, const Value& start_v, const Value& stop_v,
                                  const Value& step_v) {
  const int64_t step = step_v.kind == Kind::kUndefined ? 1 : ToInt64(step_v.number);
  const bool has_start = start_v.kind != Kind::kUndefined;
  const bool has_stop = stop_v.kind != Kind::kUndefined;
  int64_t start = has_start ? ToInt64(start_v.number) : 0;
  int64_t stop = has_stop ? ToInt64(stop_v.number) : 0;
  const int direction = step > 0 ? 1 : (step < 0 ? -1 : 0);
  if (direction >= 0) {
    if (!has_start) start = 0;
    start = start < 0 ? std::max<int64_t>(size + start, 0) : std::min(start, size);
    if (!has_stop) stop = size;
    stop = stop < 0 ? std::max<int64_t>(size + stop, 0) : std::min(stop, size);
  } else {
    if (!has_start) start = size - 1;
    start = start < 0 ? std::max<int64_t>(size + start, -1) : std::min(start, size - 1);
    if (!has_stop) stop = -1;
    stop = stop < -1 ? std::max<int64_t>(size + stop, -1) : std::min(stop, size - 1);
  }
  std::vector<int64_t> out;
  if (direction == 0) return out;
  for (int64_t i = start; direction * i < direction * stop; i += step) out.push_back(i);
  return out;
}

}  // namespace

absl::Status RuntimeError(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("chat template error: ", message));
}

Value Environment::Lookup(const std::string& name) const {
  for (const Environment* env = this; env != nullptr; env = env->parent_) {
    auto it = env->vars_.find(name);
    if (it != env->vars_.end()) return it->second;
  }
  return Value::Undefined();
}

void Environment::Set(const std::string& name, Value value) { vars_[name] = std::move(value); }

absl::StatusOr<std::string> Interpreter::Render(const NodeList& program, Environment& env) {
  absl::StatusOr<std::string> out = EvaluateBlock(program, env);
  if (!out.ok()) {
    if (IsSignal(out.status(), kBreakSignal) || IsSignal(out.status(), kContinueSignal)) {
      return RuntimeError("break/continue outside of a for loop");
    }
  }
  return out;
}

absl::StatusOr<std::string> Interpreter::EvaluateBlock(const NodeList& body, Environment& env) {
  std::string out;
  for (const NodePtr& statement : body) {
    MOESERVE_ASSIGN_OR_RETURN(Value v, Evaluate(*statement, env));
    if (v.kind == Kind::kNull || v.kind == Kind::kUndefined) continue;
    if (v.kind == Kind::kString) {
      out += v.str;
    } else {
      out += ToDisplayString(v);
    }
    if (out.size() > kMaxOutputBytes) return RuntimeError("output exceeds 64 MiB");
  }
  return out;
}

absl::StatusOr<Value> Interpreter::Evaluate(const Node& node, Environment& env) {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxDepth) return RuntimeError("maximum recursion depth exceeded");
  return EvaluateNode(node, env);
}

absl::StatusOr<Value> Interpreter::EvaluateNode(const Node& node, Environment& env) {
  switch (node.kind) {
    case NodeKind::kText:
    case NodeKind::kStringLiteral:
      return Value::String(node.str);
    case NodeKind::kIntegerLiteral:
      return Value::Int(node.number);
    case NodeKind::kFloatLiteral:
      return Value::Float(node.number);
    case NodeKind::kIdentifier:
      return env.Lookup(node.str);
    case NodeKind::kComment:
      return Value::Null();
    case NodeKind::kArrayLiteral:
    case NodeKind::kTupleLiteral: {
      Array items;
      for (const NodePtr& item : node.list) {
        MOESERVE_ASSIGN_OR_RETURN(Value v, Evaluate(*item, env));
        items.push_back(std::move(v));
      }
      return Value::MakeArray(std::move(items), node.kind == NodeKind::kTupleLiteral);
    }
    case NodeKind::kObjectLiteral: {
      auto object = std::make_shared<Object>();
      for (size_t i = 0; i < node.list.size(); ++i) {
        MOESERVE_ASSIGN_OR_RETURN(Value key, Evaluate(*node.list[i], env));
        if (key.kind != Kind::kString) {
          return RuntimeError(absl::StrCat("Object keys must be strings: got ", key.TypeName()));
        }
        MOESERVE_ASSIGN_OR_RETURN(Value value, Evaluate(*node.list2[i], env));
        object->Set(key.str, std::move(value));
      }
      return Value::MakeObject(std::move(object));
    }
    case NodeKind::kMember:
      return EvaluateMember(node, env);
    case NodeKind::kCall:
      return EvaluateCall(node, env);
    case NodeKind::kNot: {
      MOESERVE_ASSIGN_OR_RETURN(Value v, Evaluate(*node.a, env));
      return Value::Bool(!v.JsTruthy());
    }
    case NodeKind::kBinary:
      return EvaluateBinary(node, env);
    case NodeKind::kFilter: {
      MOESERVE_ASSIGN_OR_RETURN(Value operand, Evaluate(*node.a, env));
      return ApplyFilter(operand, *node.b, env);
    }
    case NodeKind::kTest: {
      MOESERVE_ASSIGN_OR_RETURN(Value operand, Evaluate(*node.a, env));
      absl::StatusOr<bool> result = RunTest(node.str, operand, nullptr);
      if (!result.ok()) return result.status();
      return Value::Bool(node.flag ? !*result : *result);
    }
    case NodeKind::kSelect: {
      MOESERVE_ASSIGN_OR_RETURN(Value test, Evaluate(*node.b, env));
      if (!test.Truthy()) return Value::Undefined();
      return Evaluate(*node.a, env);
    }
    case NodeKind::kTernary: {
      MOESERVE_ASSIGN_OR_RETURN(Value cond, Evaluate(*node.a, env));
      return Evaluate(cond.Truthy() ? *node.b : *node.c, env);
    }
    case NodeKind::kIf: {
      MOESERVE_ASSIGN_OR_RETURN(Value test, Evaluate(*node.a, env));
      MOESERVE_ASSIGN_OR_RETURN(std::string out, EvaluateBlock(test.Truthy() ? node.list : node.list2, env));
      return Value::String(std::move(out));
    }
    case NodeKind::kFor:
      return EvaluateFor(node, env);
    case NodeKind::kSet:
      return EvaluateSet(node, env);
    case NodeKind::kMacro:
      return EvaluateMacro(node, env);
    case NodeKind::kCallBlock:
      return EvaluateCallBlock(node, env);
    case NodeKind::kFilterBlock: {
      MOESERVE_ASSIGN_OR_RETURN(std::string body, EvaluateBlock(node.list, env));
      return ApplyFilter(Value::String(std::move(body)), *node.a, env);
    }
    case NodeKind::kBreak:
      return absl::AbortedError(kBreakSignal);
    case NodeKind::kContinue:
      return absl::AbortedError(kContinueSignal);
    case NodeKind::kSlice:
    case NodeKind::kKeywordArgument:
    case NodeKind::kSpread:
      break;
  }
  return RuntimeError("unexpected expression");
}

absl::StatusOr<Value> Interpreter::EvaluateBinary(const Node& node, Environment& env) {
  const std::string& op = node.str;
  MOESERVE_ASSIGN_OR_RETURN(Value left, Evaluate(*node.a, env));
  if (op == "and") return left.Truthy() ? Evaluate(*node.b, env) : left;
  if (op == "or") return left.Truthy() ? left : Evaluate(*node.b, env);
  MOESERVE_ASSIGN_OR_RETURN(Value right, Evaluate(*node.b, env));
  if (op == "==") return Value::Bool(LooseEquals(left, right));
  if (op == "!=") return Value::Bool(!LooseEquals(left, right));
  if (left.kind == Kind::kUndefined || right.kind == Kind::kUndefined) {
    if (right.kind == Kind::kUndefined && (op == "in" || op == "not in")) {
      return Value::Bool(op == "not in");
    }
    return RuntimeError(absl::StrCat("Cannot perform operation ", op, " on undefined values"));
  }
  if (left.kind == Kind::kNull || right.kind == Kind::kNull) {
    return RuntimeError("Cannot perform operation on null values");
  }
  if (op == "~") return Value::String(ToJsString(left) + ToJsString(right));
  if (left.IsNumber() && right.IsNumber()) {
    const double a = left.number, b = right.number;
    const bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat;
    if (op == "+" || op == "-" || op == "*") {
      const double r = op == "+" ? a + b : (op == "-" ? a - b : a * b);
      return is_float ? Value::Float(r) : Value::Int(r);
    }
    if (op == "/") return Value::Float(a / b);
    if (op == "%") {
      const double r = std::fmod(a, b);
      return is_float ? Value::Float(r) : Value::Int(r);
    }
    if (op == "<") return Value::Bool(a < b);
    if (op == ">") return Value::Bool(a > b);
    if (op == ">=") return Value::Bool(a >= b);
    if (op == "<=") return Value::Bool(a <= b);
  } else if (left.kind == Kind::kArray && right.kind == Kind::kArray) {
    if (op == "+") {
      Array items = *left.array;
      items.insert(items.end(), right.array->begin(), right.array->end());
      return Value::MakeArray(std::move(items));
    }
  } else if (right.kind == Kind::kArray) {
    if (op == "in" || op == "not in") {
      bool member = false;
      for (const Value& item : *right.array) {
        if (StrictEquals(item, left)) {
          member = true;
          break;
        }
      }
      return Value::Bool(op == "in" ? member : !member);
    }
  }
  if ((left.kind == Kind::kString || right.kind == Kind::kString) && op == "+") {
    return Value::String(ToJsString(left) + ToJsString(right));
  }
  if (left.kind == Kind::kString && right.kind == Kind::kString && (op == "in" || op == "not in")) {
    const bool found = right.str.find(left.str) != std::string::npos;
    return Value::Bool(op == "in" ? found : !found);
  }
  if (left.kind == Kind::kString && right.kind == Kind::kObject && (op == "in" || op == "not in")) {
    const bool found = right.object->Find(left.str) != nullptr;
    return Value::Bool(op == "in" ? found : !found);
  }
  return RuntimeError(absl::StrCat("Unknown operator \"", op, "\" between ", left.TypeName(), " and ",
                                   right.TypeName()));
}

absl::StatusOr<Interpreter::Arguments> Interpreter::EvaluateArguments(const NodeList& args,
                                                                      Environment& env) {
  Arguments out;
  for (const NodePtr& arg : args) {
    if (arg->kind == NodeKind::kSpread) {
      MOESERVE_ASSIGN_OR_RETURN(Value v, Evaluate(*arg->a, env));
      if (v.kind != Kind::kArray) {
        return RuntimeError(absl::StrCat("Cannot unpack non-iterable type: ", v.TypeName()));
      }
      for (const Value& item : *v.array) out.positional.push_back(item);
    } else if (arg->kind == NodeKind::kKeywordArgument) {
      MOESERVE_ASSIGN_OR_RETURN(Value v, Evaluate(*arg->a, env));
      out.keywords->Set(arg->str, std::move(v));
    } else {
      if (out.keywords->size() > 0) {
        return RuntimeError("Positional arguments must come before keyword arguments");
      }
      MOESERVE_ASSIGN_OR_RETURN(Value v, Evaluate(*arg, env));
      out.positional.push_back(std::move(v));
    }
  }
  return out;
}

absl::StatusOr<Value> Interpreter::EvaluateCall(const Node& node, Environment& env) {
  MOESERVE_ASSIGN_OR_RETURN(Arguments args, EvaluateArguments(node.list, env));
  if (args.keywords->size() > 0) {
    args.positional.push_back(Value::MakeObject(std::move(args.keywords), /*kwargs=*/true));
  }
  MOESERVE_ASSIGN_OR_RETURN(Value fn, Evaluate(*node.a, env));
  if (fn.kind != Kind::kFunction) {
    return RuntimeError(
        absl::StrCat("Cannot call something that is not a function: got ", fn.TypeName()));
  }
  return (*fn.function)(args.positional, env);
}

absl::StatusOr<Value> Interpreter::EvaluateMember(const Node& node, Environment& env) {
  MOESERVE_ASSIGN_OR_RETURN(Value object, Evaluate(*node.a, env));
  Value property;
  if (node.flag) {
    if (node.b->kind == NodeKind::kSlice) return EvaluateSlice(object, *node.b, env);
    MOESERVE_ASSIGN_OR_RETURN(property, Evaluate(*node.b, env));
  } else {
    property = Value::String(node.b->str);
  }
  return GetMember(object, property);
}

absl::StatusOr<Value> Interpreter::EvaluateSlice(const Value& object, const Node& slice,
                                                 Environment& env) {
  if (object.kind != Kind::kArray && object.kind != Kind::kString) {
    return RuntimeError("Slice object must be an array or string");
  }
  Value parts[3];
  const Node* nodes[3] = {slice.a.get(), slice.b.get(), slice.c.get()};
  for (int i = 0; i < 3; ++i) {
    if (nodes[i] == nullptr) continue;
    MOESERVE_ASSIGN_OR_RETURN(parts[i], Evaluate(*nodes[i], env));
    if (parts[i].kind != Kind::kInt && parts[i].kind != Kind::kUndefined) {
      return RuntimeError("Slice indices must be integers or undefined");
    }
  }
  if (object.kind == Kind::kArray) {
    Array out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(object.array->size()), parts[0], parts[1], parts[2])) {
      out.push_back((*object.array)[i]);
    }
    return Value::MakeArray(std::move(out));
  }
  const std::vector<std::string> chars = CodePoints(object.str);
  std::string out;
  for (int64_t i : SliceIndices(static_cast<int64_t>(chars.size()), parts[0], parts[1], parts[2])) {
    out += chars[i];
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Interpreter::EvaluateSet(const Node& node, Environment& env) {
  Value rhs;
  if (node.b) {
    MOESERVE_ASSIGN_OR_RETURN(rhs, Evaluate(*node.b, env));
  } else {
    MOESERVE_ASSIGN_OR_RETURN(std::string body, EvaluateBlock(node.list, env));
    rhs = Value::String(std::move(body));
  }
  const Node& target = *node.a;
  if (target.kind == NodeKind::kIdentifier) {
    env.Set(target.str, std::move(rhs));
  } else if (target.kind == NodeKind::kTupleLiteral) {
    if (rhs.kind != Kind::kArray) {
      return RuntimeError(absl::StrCat("Cannot unpack non-iterable type in set: ", rhs.TypeName()));
    }
    if (rhs.array->size() != target.list.size()) {
      return RuntimeError(absl::StrCat("Too ", target.list.size() > rhs.array->size() ? "few" : "many",
                                       " items to unpack in set"));
    }
    for (size_t i = 0; i < target.list.size(); ++i) {
      if (target.list[i]->kind != NodeKind::kIdentifier) {
        return RuntimeError("Cannot unpack to non-identifier in set");
      }
      env.Set(target.list[i]->str, (*rhs.array)[i]);
    }
  } else if (target.kind == NodeKind::kMember) {
    MOESERVE_ASSIGN_OR_RETURN(Value object, Evaluate(*target.a, env));
    if (object.kind != Kind::kObject) return RuntimeError("Cannot assign to member of non-object");
    if (target.b->kind != NodeKind::kIdentifier) {
      return RuntimeError("Cannot assign to member with non-identifier property");
    }
    object.object->Set(target.b->str, std::move(rhs));
  } else {
    return RuntimeError("Invalid left-hand side of set");
  }
  return Value::Null();
}

absl::StatusOr<Value> Interpreter::EvaluateFor(const Node& node, Environment& env) {
  Environment scope(&env);
  const Node* test = nullptr;
  Value iterable;
  if (node.b->kind == NodeKind::kSelect) {
    MOESERVE_ASSIGN_OR_RETURN(iterable, Evaluate(*node.b->a, scope));
    test = node.b->b.get();
  } else {
    MOESERVE_ASSIGN_OR_RETURN(iterable, Evaluate(*node.b, scope));
  }
  Array all;
  if (iterable.kind == Kind::kArray) {
    all = *iterable.array;
  } else if (iterable.kind == Kind::kObject) {
    for (const auto& entry : iterable.object->entries()) all.push_back(Value::String(entry.first));
  } else {
    return RuntimeError(absl::StrCat("Expected iterable or object type in for loop: got ", iterable.TypeName()));
  }
  const Node& loopvar = *node.a;
  // Binds the loop variable(s) for `item` in `target`.
  auto bind = [&](const Value& item, Environment& target) -> absl::Status {
    if (loopvar.kind == NodeKind::kIdentifier) {
      target.Set(loopvar.str, item);
      return absl::OkStatus();
    }
    if (item.kind != Kind::kArray || item.flag) {
      return RuntimeError(absl::StrCat("Cannot unpack non-iterable type: ", item.TypeName()));
    }
    if (loopvar.list.size() != item.array->size()) {
      return RuntimeError(absl::StrCat("Too ", loopvar.list.size() > item.array->size() ? "few" : "many",
                                       " items to unpack"));
    }
    for (size_t j = 0; j < loopvar.list.size(); ++j) {
      if (loopvar.list[j]->kind != NodeKind::kIdentifier) {
        return RuntimeError("Cannot unpack non-identifier type");
      }
      target.Set(loopvar.list[j]->str, (*item.array)[j]);
    }
    return absl::OkStatus();
  };
  Array items;
  for (const Value& item : all) {
    if (loopvar.kind == NodeKind::kTupleLiteral && (item.kind != Kind::kArray || item.flag)) {
      return RuntimeError(absl::StrCat("Cannot unpack non-iterable type: ", item.TypeName()));
    }
    if (loopvar.kind == NodeKind::kTupleLiteral && loopvar.list.size() != item.array->size()) {
      return RuntimeError(absl::StrCat("Too ", loopvar.list.size() > item.array->size() ? "few" : "many",
                                       " items to unpack"));
    }
    if (test != nullptr) {
      Environment loop_scope(&scope);
      MOESERVE_RETURN_IF_ERROR(bind(item, loop_scope));
      MOESERVE_ASSIGN_OR_RETURN(Value keep, Evaluate(*test, loop_scope));
      if (!keep.Truthy()) continue;
    }
    items.push_back(item);
  }
  std::string out;
  bool no_iteration = true;
  const size_t n = items.size();
  for (size_t i = 0; i < n; ++i) {
    if (++iterations_ > kMaxIterations) return RuntimeError("too many loop iterations");
    auto loop = std::make_shared<Object>();
    loop->Set("index", Value::Int(static_cast<double>(i + 1)));
    loop->Set("index0", Value::Int(static_cast<double>(i)));
    loop->Set("revindex", Value::Int(static_cast<double>(n - i)));
    loop->Set("revindex0", Value::Int(static_cast<double>(n - i - 1)));
    loop->Set("first", Value::Bool(i == 0));
    loop->Set("last", Value::Bool(i == n - 1));
    loop->Set("length", Value::Int(static_cast<double>(n)));
    loop->Set("previtem", i > 0 ? items[i - 1] : Value::Undefined());
    loop->Set("nextitem", i + 1 < n ? items[i + 1] : Value::Undefined());
    scope.Set("loop", Value::MakeObject(std::move(loop)));
    MOESERVE_RETURN_IF_ERROR(bind(items[i], scope));
    absl::StatusOr<std::string> body = EvaluateBlock(node.list, scope);
    if (!body.ok()) {
      if (IsSignal(body.status(), kContinueSignal)) continue;
      if (IsSignal(body.status(), kBreakSignal)) break;
      return body.status();
    }
    out += *body;
    if (out.size() > kMaxOutputBytes) return RuntimeError("output exceeds 64 MiB");
    no_iteration = false;
  }
  if (no_iteration) {
    MOESERVE_ASSIGN_OR_RETURN(std::string otherwise, EvaluateBlock(node.list2, scope));
    out += otherwise;
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Interpreter::EvaluateMacro(const Node& node, Environment& env) {
  const Node* macro = &node;
  env.Set(node.str, Value::Function([this, macro](std::vector<Value>& call_args,
                                                  Environment& scope) -> absl::StatusOr<Value> {
    Environment macro_scope(&scope);
    std::vector<Value> args = call_args;
    std::shared_ptr<Object> kwargs;
    if (!args.empty() && args.back().IsKwargs()) {
      kwargs = args.back().object;
      args.pop_back();
    }
    for (size_t i = 0; i < macro->list.size(); ++i) {
      const Node& param = *macro->list[i];
      if (param.kind == NodeKind::kIdentifier) {
        if (i >= args.size()) return RuntimeError(absl::StrCat("Missing positional argument: ", param.str));
        macro_scope.Set(param.str, args[i]);
      } else if (param.kind == NodeKind::kKeywordArgument) {
        Value value;
        const Value* passed = kwargs ? kwargs->Find(param.str) : nullptr;
        if (i < args.size()) {
          value = args[i];
        } else if (passed != nullptr) {
          value = *passed;
        } else {
          MOESERVE_ASSIGN_OR_RETURN(value, Evaluate(*param.a, macro_scope));
        }
        macro_scope.Set(param.str, std::move(value));
      } else {
        return RuntimeError("Unknown macro argument type");
      }
    }
    MOESERVE_ASSIGN_OR_RETURN(std::string out, EvaluateBlock(macro->list2, macro_scope));
    return Value::String(std::move(out));
  }));
  return Value::Null();
}

absl::StatusOr<Value> Interpreter::EvaluateCallBlock(const Node& node, Environment& env) {
  const Node* block = &node;
  Value caller = Value::Function([this, block](std::vector<Value>& caller_args,
                                               Environment& caller_env) -> absl::StatusOr<Value> {
    Environment call_env(&caller_env);
    if (block->flag) {
      for (size_t i = 0; i < block->list.size(); ++i) {
        if (block->list[i]->kind != NodeKind::kIdentifier) {
          return RuntimeError("Caller parameter must be an identifier");
        }
        call_env.Set(block->list[i]->str, i < caller_args.size() ? caller_args[i] : Value::Undefined());
      }
    }
    MOESERVE_ASSIGN_OR_RETURN(std::string out, EvaluateBlock(block->list2, call_env));
    return Value::String(std::move(out));
  });
  const Node& call = *node.a;
  MOESERVE_ASSIGN_OR_RETURN(Arguments args, EvaluateArguments(call.list, env));
  args.positional.push_back(Value::MakeObject(std::move(args.keywords), /*kwargs=*/true));
  MOESERVE_ASSIGN_OR_RETURN(Value fn, Evaluate(*call.a, env));
  if (fn.kind != Kind::kFunction) {
    return RuntimeError(absl::StrCat("Cannot call something that is not a function: got ", fn.TypeName()));
  }
  Environment call_scope(&env);
  call_scope.Set("caller", std::move(caller));
  return (*fn.function)(args.positional, call_scope);
}

}  // namespace moeserve::engine::chat
