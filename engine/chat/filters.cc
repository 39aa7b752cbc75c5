// Filters (`value | name` and `value | name(args)`) as @huggingface/jinja implements them, plus a
// few extensions noted inline where the reference has none (round, safe, escape, ...).
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat/interpreter.h"
#include "engine/chat/js_text.h"

namespace moeserve::engine::chat {
namespace {

std::string Indent(const std::string& s, const std::string& pad, bool first, bool blank) {
  std::string out;
  size_t start = 0;
  for (size_t line = 0;; ++line) {
    const size_t end = s.find('\n', start);
    const absl::string_view text =
        absl::string_view(s).substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!((!first && line == 0) || (!blank && text.empty()))) out += pad;
    out.append(text.data(), text.size());
    if (end == std::string::npos) break;
    out += '\n';
    start = end + 1;
  }
  return out;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Python's round(x, precision) as Jinja's `round` filter does it ("common": half away from zero).
Value Round(double x, int precision, const std::string& method) {
  const double scale = std::pow(10.0, precision);
  double r;
  if (method == "ceil") {
    r = std::ceil(x * scale) / scale;
  } else if (method == "floor") {
    r = std::floor(x * scale) / scale;
  } else {
    r = std::round(x * scale) / scale;
  }
  return Value::Float(r);
}

absl::Status CannotApply(absl::string_view name, const Value& operand) {
  return RuntimeError(absl::StrCat("Cannot apply filter \"", name, "\" to type: ", operand.TypeName()));
}

absl::StatusOr<Value> SortInPlace(const Value& operand) {
  absl::Status error;
  auto compare = [&error](const Value& a, const Value& b) -> double {
    if (!error.ok()) return 0;
    if (a.kind != b.kind || a.flag != b.flag) {
      error = RuntimeError(absl::StrCat("Cannot compare different types: ", a.TypeName(), " and ", b.TypeName()));
      return 0;
    }
    if (a.IsNumber()) return a.number - b.number;
    if (a.kind == Kind::kString) return JsLocaleCompare(a.str, b.str);
    error = RuntimeError(absl::StrCat("Cannot compare type: ", a.TypeName()));
    return 0;
  };
  Array sorted = *operand.array;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [&](const Value& a, const Value& b) { return compare(a, b) < 0; });
  if (!error.ok()) return error;
  *operand.array = std::move(sorted);
  return Value::SharedArray(operand.array);
}

}  // namespace

absl::StatusOr<Value> Interpreter::ApplyFilter(const Value& operand, const Node& filter, Environment& env) {
  if (filter.kind == NodeKind::kIdentifier) return ApplyNamedFilter(operand, filter.str);
  if (filter.kind == NodeKind::kCall) return ApplyCallFilter(operand, filter, env);
  return RuntimeError("Unknown filter expression");
}

absl::StatusOr<Value> Interpreter::ApplyNamedFilter(const Value& operand, const std::string& name) {
  if (name == "tojson") {
    MOESERVE_ASSIGN_OR_RETURN(std::string json, ToJson(operand, 0));
    return Value::String(std::move(json));
  }
  // Extensions: filters the reference lacks or rejects for every type.
  if (name == "safe") return operand;
  if (name == "default") return operand.kind == Kind::kUndefined ? Value::String("") : operand;
  switch (operand.kind) {
    case Kind::kArray: {
      const Array& items = *operand.array;
      if (name == "list") return operand;
      if (name == "first") return items.empty() ? Value::Undefined() : items.front();
      if (name == "last") return items.empty() ? Value::Undefined() : items.back();
      if (name == "length") return Value::Int(static_cast<double>(items.size()));
      if (name == "reverse") {
        std::reverse(operand.array->begin(), operand.array->end());  // in place, like the reference
        return Value::SharedArray(operand.array);
      }
      if (name == "sort") return SortInPlace(operand);
      if (name == "join") {
        std::string out;
        for (const Value& item : items) out += ToJoinString(item);
        return Value::String(std::move(out));
      }
      if (name == "string") {
        MOESERVE_ASSIGN_OR_RETURN(std::string json, ToJson(operand, 0));
        return Value::String(std::move(json));
      }
      if (name == "unique") {
        Array out;
        for (const Value& item : items) {
          bool seen = false;
          for (const Value& kept : out) {
            if (StrictEquals(kept, item) || (kept.IsNumber() && item.IsNumber() && std::isnan(kept.number) &&
                                             std::isnan(item.number))) {
              seen = true;
              break;
            }
          }
          if (!seen) out.push_back(item);
        }
        return Value::MakeArray(std::move(out));
      }
      return RuntimeError(absl::StrCat("Unknown ArrayValue filter: ", name));
    }
    case Kind::kString: {
      const std::string& s = operand.str;
      if (name == "length") return Value::Int(static_cast<double>(Utf16Length(s)));
      if (name == "upper") return Value::String(JsToUpper(s));
      if (name == "lower") return Value::String(JsToLower(s));
      if (name == "title") return Value::String(JsTitle(s));
      if (name == "capitalize") return Value::String(JsCapitalize(s));
      if (name == "trim") return Value::String(JsTrim(s, true, true));
      if (name == "indent") return Value::String(Indent(s, "    ", false, false));
      if (name == "join" || name == "string") return operand;
      if (name == "int") {
        std::optional<double> v = JsParseInt(s);
        return Value::Int(v ? *v : 0);
      }
      if (name == "float") {
        std::optional<double> v = JsParseFloat(s);
        return Value::Float(v ? *v : 0);
      }
      if (name == "escape" || name == "e") return Value::String(HtmlEscape(s));  // extension
      return RuntimeError(absl::StrCat("Unknown StringValue filter: ", name));
    }
    case Kind::kInt:
    case Kind::kFloat: {
      if (name == "abs") {
        return operand.kind == Kind::kInt ? Value::Int(std::fabs(operand.number)) : Value::Float(std::fabs(operand.number));
      }
      if (name == "int") return Value::Int(std::floor(operand.number));
      if (name == "float") return Value::Float(operand.number);
      if (name == "round") return Round(operand.number, 0, "common");  // extension
      if (name == "string") return Value::String(ToDisplayString(operand));  // extension
      return RuntimeError(absl::StrCat("Unknown NumericValue filter: ", name));
    }
    case Kind::kObject: {
      if (name == "items") {
        Array out;
        for (const auto& [key, value] : operand.object->entries()) {
          out.push_back(Value::MakeArray({Value::String(key), value}));
        }
        return Value::MakeArray(std::move(out));
      }
      if (name == "length") return Value::Int(static_cast<double>(operand.object->size()));
      return RuntimeError(absl::StrCat("Unknown ObjectValue filter: ", name));
    }
    case Kind::kBool: {
      if (name == "bool") return operand;
      if (name == "int") return Value::Int(operand.flag ? 1 : 0);
      if (name == "float") return Value::Float(operand.flag ? 1 : 0);
      if (name == "string") return Value::String(operand.flag ? "true" : "false");
      return RuntimeError(absl::StrCat("Unknown BooleanValue filter: ", name));
    }
    default:
      return CannotApply(name, operand);
  }
}

absl::StatusOr<Value> Interpreter::ApplyCallFilter(const Value& operand, const Node& call, Environment& env) {
  if (call.a->kind != NodeKind::kIdentifier) return RuntimeError("Unknown filter expression");
  const std::string& name = call.a->str;
  if (name == "selectattr" || name == "rejectattr") {
    if (operand.kind != Kind::kArray) return CannotApply(name, operand);
    return SelectAttr(operand, call, env);
  }
  MOESERVE_ASSIGN_OR_RETURN(Arguments args, EvaluateArguments(call.list, env));
  const Value* arg0 = args.positional.empty() ? nullptr : &args.positional[0];
  auto kwarg = [&](absl::string_view key) { return args.keywords->Find(key); };
  if (name == "tojson") {
    const Value* indent = kwarg("indent");
    if (indent != nullptr && indent->kind != Kind::kInt && indent->kind != Kind::kNull) {
      return RuntimeError("If set, indent must be a number");
    }
    const int width = indent != nullptr && indent->kind == Kind::kInt ? static_cast<int>(std::clamp<int64_t>(ToInt64(indent->number), 0, 64)) : 0;
    MOESERVE_ASSIGN_OR_RETURN(std::string json, ToJson(operand, std::clamp(width, 0, 64)));
    return Value::String(std::move(json));
  }
  if (name == "join") {
    std::vector<std::string> parts;
    if (operand.kind == Kind::kString) {
      parts = CodePoints(operand.str);
    } else if (operand.kind == Kind::kArray) {
      for (const Value& item : *operand.array) parts.push_back(ToJoinString(item));
    } else {
      return CannotApply(name, operand);
    }
    const Value* sep = arg0 != nullptr ? arg0 : kwarg("separator");
    if (sep != nullptr && sep->kind != Kind::kString) return RuntimeError("separator must be a string");
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i > 0 && sep != nullptr) out += sep->str;
      out += parts[i];
    }
    return Value::String(std::move(out));
  }
  if (name == "int" || name == "float") {
    const bool is_int = name == "int";
    const Value* def = arg0 != nullptr ? arg0 : kwarg("default");
    const Value fallback = def != nullptr ? *def : (is_int ? Value::Int(0) : Value::Float(0));
    if (operand.kind == Kind::kString) {
      std::optional<double> v = is_int ? JsParseInt(operand.str) : JsParseFloat(operand.str);
      if (!v) return fallback;
      return is_int ? Value::Int(*v) : Value::Float(*v);
    }
    if (operand.IsNumber()) return operand;
    if (operand.kind == Kind::kBool) return is_int ? Value::Int(operand.flag ? 1 : 0) : Value::Float(operand.flag ? 1 : 0);
    return CannotApply(name, operand);
  }
  if (name == "default") {
    const Value def = arg0 != nullptr ? *arg0 : Value::String("");
    const Value* boolean = args.positional.size() > 1 ? &args.positional[1] : kwarg("boolean");
    if (boolean != nullptr && boolean->kind != Kind::kBool) return RuntimeError("`default` filter flag must be a boolean");
    const bool use_bool = boolean != nullptr && boolean->flag;
    if (operand.kind == Kind::kUndefined || (use_bool && !operand.Truthy())) return def;
    return operand;
  }
  if (name == "round" && operand.IsNumber()) {  // extension
    const Value* precision = arg0 != nullptr ? arg0 : kwarg("precision");
    const Value* method = args.positional.size() > 1 ? &args.positional[1] : kwarg("method");
    return Round(operand.number, precision != nullptr && precision->IsNumber() ? static_cast<int>(std::clamp<int64_t>(ToInt64(precision->number), -300, 300)) : 0,
                 method != nullptr && method->kind == Kind::kString ? method->str : "common");
  }
  if (operand.kind == Kind::kArray && name == "map") {
    const Value* attr = kwarg("attribute");
    if (attr == nullptr) return RuntimeError("`map` expressions without `attribute` set are not currently supported.");
    if (attr->kind != Kind::kString) return RuntimeError("attribute must be a string");
    const Value* def = kwarg("default");
    Array out;
    for (const Value& item : *operand.array) {
      if (item.kind != Kind::kObject) return RuntimeError("items in map must be an object");
      const Value* v = item.object->Find(attr->str);
      out.push_back(v != nullptr ? *v : (def != nullptr ? *def : Value::Undefined()));
    }
    return Value::MakeArray(std::move(out));
  }
  if (operand.kind == Kind::kString && name == "indent") {
    const Value* width = arg0 != nullptr ? arg0 : kwarg("width");
    if (width != nullptr && width->kind != Kind::kInt) return RuntimeError("width must be a number");
    const Value* first = args.positional.size() > 1 ? &args.positional[1] : kwarg("first");
    const Value* blank = args.positional.size() > 2 ? &args.positional[2] : kwarg("blank");
    const int n = width != nullptr ? static_cast<int>(std::clamp<int64_t>(ToInt64(width->number), 0, 4096)) : 4;
    return Value::String(Indent(operand.str, std::string(n, ' '), first != nullptr && first->JsTruthy(),
                                blank != nullptr && blank->JsTruthy()));
  }
  if (operand.kind == Kind::kString && name == "replace") {
    std::vector<Value> method_args = args.positional;
    method_args.push_back(Value::MakeObject(args.keywords, /*kwargs=*/true));
    MOESERVE_ASSIGN_OR_RETURN(Value replace, GetMember(operand, Value::String("replace")));
    return (*replace.function)(method_args, env);
  }
  // Extension: `value | upper()` behaves like `value | upper`.
  if (call.list.empty()) return ApplyNamedFilter(operand, name);
  return CannotApply(name, operand);
}

absl::StatusOr<Value> Interpreter::SelectAttr(const Value& operand, const Node& call, Environment& env) {
  const std::string& name = call.a->str;
  for (const Value& item : *operand.array) {
    if (item.kind != Kind::kObject) return RuntimeError(absl::StrCat("`", name, "` can only be applied to array of objects"));
  }
  std::vector<Value> args;
  for (const NodePtr& arg : call.list) {
    if (arg->kind != NodeKind::kStringLiteral) return RuntimeError(absl::StrCat("arguments of `", name, "` must be strings"));
    MOESERVE_ASSIGN_OR_RETURN(Value v, Evaluate(*arg, env));
    args.push_back(std::move(v));
  }
  if (args.empty()) return RuntimeError(absl::StrCat("`", name, "` needs an attribute name"));
  if (args.size() > 1) {
    absl::StatusOr<bool> probe = RunTest(args[1].str, Value::Undefined(), args.size() > 2 ? &args[2] : nullptr);
    if (absl::IsNotFound(probe.status())) return probe.status();
  }
  const bool select = name == "selectattr";
  Array out;
  for (const Value& item : *operand.array) {
    const Value* a = item.object->Find(args[0].str);
    bool result = false;
    if (a != nullptr) {
      if (args.size() > 1) {
        absl::StatusOr<bool> r = RunTest(args[1].str, *a, args.size() > 2 ? &args[2] : nullptr);
        if (!r.ok()) return r.status();
        result = *r;
      } else {
        result = a->Truthy();
      }
    }
    if (result == select) out.push_back(item);
  }
  return Value::MakeArray(std::move(out));
}

}  // namespace moeserve::engine::chat
