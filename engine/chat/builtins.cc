// Globals, `is` tests, member access and the methods of strings and objects.
#include <cmath>
#include <ctime>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/chat/interpreter.h"
#include "engine/chat/js_text.h"

namespace moeserve::engine::chat {
namespace {

constexpr size_t kMaxRangeLength = 1'000'000;

const Value* Arg(const std::vector<Value>& args, size_t i) { return i < args.size() ? &args[i] : nullptr; }

// JavaScript's str.split(sep) for a non-empty separator.
std::vector<std::string> SplitOn(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t at = s.find(sep, start);
    if (at == std::string::npos) break;
    out.push_back(s.substr(start, at - start));
    start = at + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

absl::StatusOr<Value> StringSplit(const std::string& s, const std::vector<Value>& args) {
  const Value* sep = Arg(args, 0);
  if (sep != nullptr && sep->kind != Kind::kString && sep->kind != Kind::kNull) {
    return RuntimeError("sep argument must be a string or null");
  }
  const Value* maxsplit_v = Arg(args, 1);
  if (maxsplit_v != nullptr && maxsplit_v->kind != Kind::kInt) {
    return RuntimeError("maxsplit argument must be a number");
  }
  const double maxsplit = maxsplit_v == nullptr ? -1 : maxsplit_v->number;
  std::vector<std::string> parts;
  if (sep == nullptr || sep->kind == Kind::kNull) {
    const std::string text = JsTrim(s, true, false);
    size_t pos = 0;
    while (pos < text.size()) {
      // Skip whitespace, then take a run of non-whitespace.
      size_t next = pos;
      if (IsJsWhitespace(DecodeUtf8(text, &next))) {
        pos = next;
        continue;
      }
      const size_t start = pos;
      while (pos < text.size()) {
        next = pos;
        if (IsJsWhitespace(DecodeUtf8(text, &next))) break;
        pos = next;
      }
      if (maxsplit != -1 && static_cast<double>(parts.size()) >= maxsplit) {
        parts.push_back(text.substr(start));
        break;
      }
      parts.push_back(text.substr(start, pos - start));
    }
  } else {
    if (sep->str.empty()) return RuntimeError("empty separator");
    parts = SplitOn(s, sep->str);
    if (maxsplit != -1 && static_cast<double>(parts.size()) > maxsplit) {
      const size_t keep = maxsplit < 0 ? 0 : static_cast<size_t>(maxsplit);
      std::string rest;
      for (size_t i = keep; i < parts.size(); ++i) {
        if (i > keep) rest += sep->str;
        rest += parts[i];
      }
      parts.resize(keep);
      parts.push_back(std::move(rest));
    }
  }
  Array out;
  for (std::string& part : parts) out.push_back(Value::String(std::move(part)));
  return Value::MakeArray(std::move(out));
}

}  // namespace

namespace {

absl::StatusOr<Value> StringReplace(const std::string& s, const std::vector<Value>& args) {
  if (args.size() < 2) return RuntimeError("replace() requires at least two arguments");
  if (args[0].kind != Kind::kString || args[1].kind != Kind::kString) {
    return RuntimeError("replace() arguments must be strings");
  }
  Value count = Value::Null();
  if (args.size() > 2) {
    if (args[2].IsKwargs()) {
      const Value* c = args[2].object->Find("count");
      if (c != nullptr) count = *c;
    } else {
      count = args[2];
    }
  }
  if (count.kind != Kind::kInt && count.kind != Kind::kNull) {
    return RuntimeError("replace() count argument must be a number or null");
  }
  return Value::String(JsReplace(s, args[0].str, args[1].str, count.kind == Kind::kNull ? -1 : count.number));
}

absl::StatusOr<Value> StartsOrEndsWith(const std::string& s, const std::vector<Value>& args, bool starts) {
  const char* name = starts ? "startswith" : "endswith";
  if (args.empty()) return RuntimeError(absl::StrCat(name, "() requires at least one argument"));
  auto test = [&](const std::string& p) {
    if (p.size() > s.size()) return false;
    return starts ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (args[0].kind == Kind::kString) return Value::Bool(test(args[0].str));
  if (args[0].kind == Kind::kArray) {
    for (const Value& item : *args[0].array) {
      if (item.kind != Kind::kString) return RuntimeError(absl::StrCat(name, "() tuple elements must be strings"));
      if (test(item.str)) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  return RuntimeError(absl::StrCat(name, "() argument must be a string or tuple of strings"));
}

Value StringMethod(const std::string& s, const std::string& name) {
  using Fn = absl::StatusOr<Value> (*)(const std::string&, const std::vector<Value>&);
  Fn fn = nullptr;
  if (name == "upper") {
    fn = [](const std::string& v, const std::vector<Value>&) -> absl::StatusOr<Value> { return Value::String(JsToUpper(v)); };
  } else if (name == "lower") {
    fn = [](const std::string& v, const std::vector<Value>&) -> absl::StatusOr<Value> { return Value::String(JsToLower(v)); };
  } else if (name == "strip") {
    fn = [](const std::string& v, const std::vector<Value>&) -> absl::StatusOr<Value> { return Value::String(JsTrim(v, true, true)); };
  } else if (name == "lstrip") {
    fn = [](const std::string& v, const std::vector<Value>&) -> absl::StatusOr<Value> { return Value::String(JsTrim(v, true, false)); };
  } else if (name == "rstrip") {
    fn = [](const std::string& v, const std::vector<Value>&) -> absl::StatusOr<Value> { return Value::String(JsTrim(v, false, true)); };
  } else if (name == "title") {
    fn = [](const std::string& v, const std::vector<Value>&) -> absl::StatusOr<Value> { return Value::String(JsTitle(v)); };
  } else if (name == "capitalize") {
    fn = [](const std::string& v, const std::vector<Value>&) -> absl::StatusOr<Value> { return Value::String(JsCapitalize(v)); };
  } else if (name == "startswith") {
    fn = [](const std::string& v, const std::vector<Value>& a) { return StartsOrEndsWith(v, a, true); };
  } else if (name == "endswith") {
    fn = [](const std::string& v, const std::vector<Value>& a) { return StartsOrEndsWith(v, a, false); };
  } else if (name == "split") {
    fn = &StringSplit;
  } else if (name == "replace") {
    fn = &StringReplace;
  }
  if (fn == nullptr) return Value::Undefined();
  return Value::Function([s, fn](std::vector<Value>& args, Environment&) { return fn(s, args); });
}

Value ObjectItems(const Object& object) {
  Array out;
  for (const auto& [key, value] : object.entries()) {
    out.push_back(Value::MakeArray({Value::String(key), value}));
  }
  return Value::MakeArray(std::move(out));
}

Value ObjectMethod(const std::shared_ptr<Object>& object, const std::string& name) {
  if (name == "get") {
    return Value::Function([object](std::vector<Value>& args, Environment&) -> absl::StatusOr<Value> {
      if (args.empty() || args[0].kind != Kind::kString) {
        return RuntimeError(absl::StrCat("Object key must be a string: got ",
                                         args.empty() ? "UndefinedValue" : args[0].TypeName()));
      }
      if (const Value* v = object->Find(args[0].str)) return *v;
      return args.size() > 1 ? args[1] : Value::Null();
    });
  }
  if (name == "items") {
    return Value::Function([object](std::vector<Value>&, Environment&) -> absl::StatusOr<Value> {
      return ObjectItems(*object);
    });
  }
  if (name == "keys" || name == "values") {
    const bool keys = name == "keys";
    return Value::Function([object, keys](std::vector<Value>&, Environment&) -> absl::StatusOr<Value> {
      Array out;
      for (const auto& [key, value] : object->entries()) out.push_back(keys ? Value::String(key) : value);
      return Value::MakeArray(std::move(out));
    });
  }
  return Value::Undefined();
}

std::string Strftime(const std::string& format) {
  static constexpr const char* kMonths[] = {"January", "February", "March",     "April",   "May",      "June",
                                            "July",    "August",   "September", "October", "November", "December"};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  auto pad2 = [](int n) { return n < 10 ? absl::StrCat("0", n) : absl::StrCat(n); };
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%' || i + 1 >= format.size()) {
      out += format[i];
      continue;
    }
    const char c = format[i + 1];
    switch (c) {
      case 'Y': out += absl::StrCat(tm.tm_year + 1900); break;
      case 'm': out += pad2(tm.tm_mon + 1); break;
      case 'd': out += pad2(tm.tm_mday); break;
      case 'b': out += std::string(kMonths[tm.tm_mon]).substr(0, 3); break;
      case 'B': out += kMonths[tm.tm_mon]; break;
      case 'H': out += pad2(tm.tm_hour); break;
      case 'M': out += pad2(tm.tm_min); break;
      case '%': out += "%"; break;
      default:
        out += format[i];
        continue;
    }
    ++i;
  }
  return out;
}

}  // namespace

absl::StatusOr<Value> GetMember(const Value& object, const Value& property) {
  if (object.kind == Kind::kObject) {
    if (property.kind != Kind::kString) {
      return RuntimeError(absl::StrCat("Cannot access property with non-string: got ", property.TypeName()));
    }
    if (const Value* v = object.object->Find(property.str)) return *v;
    return ObjectMethod(object.object, property.str);
  }
  if (object.kind == Kind::kArray || object.kind == Kind::kString) {
    if (property.kind == Kind::kInt) {
      const auto index = ToInt64(property.number);
      if (object.kind == Kind::kString) {
        std::optional<std::string> ch = Utf16At(object.str, index);
        return Value::String(ch ? *ch : "undefined");  // the reference's StringValue(undefined)
      }
      const auto size = static_cast<int64_t>(object.array->size());
      const int64_t i = index < 0 ? index + size : index;
      if (i < 0 || i >= size) return Value::Undefined();
      return (*object.array)[i];
    }
    if (property.kind != Kind::kString) {
      return RuntimeError(
          absl::StrCat("Cannot access property with non-string/non-number: got ", property.TypeName()));
    }
    if (property.str == "length") {
      return Value::Int(static_cast<double>(object.kind == Kind::kString ? Utf16Length(object.str)
                                                                         : object.array->size()));
    }
    if (object.kind == Kind::kString) return StringMethod(object.str, property.str);
    return Value::Undefined();
  }
  if (property.kind != Kind::kString) {
    return RuntimeError(absl::StrCat("Cannot access property with non-string: got ", property.TypeName()));
  }
  return Value::Undefined();
}

absl::StatusOr<bool> RunTest(absl::string_view name, const Value& operand, const Value* arg) {
  const Kind k = operand.kind;
  if (name == "boolean") return k == Kind::kBool;
  if (name == "callable") return k == Kind::kFunction;
  if (name == "odd" || name == "even") {
    if (k != Kind::kInt) return RuntimeError(absl::StrCat("cannot ", name, " on ", operand.TypeName()));
    const bool odd = std::fmod(operand.number, 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "false") return k == Kind::kBool && !operand.flag;
  if (name == "true") return k == Kind::kBool && operand.flag;
  if (name == "none") return k == Kind::kNull;
  if (name == "string") return k == Kind::kString;
  if (name == "number") return operand.IsNumber();
  if (name == "integer") return k == Kind::kInt;
  if (name == "iterable") return (k == Kind::kArray && !operand.flag) || k == Kind::kString;
  if (name == "mapping") return k == Kind::kObject && !operand.flag;
  // Extension (not in @huggingface/jinja 0.5.1): Python's notion of a sequence.
  if (name == "sequence") return k == Kind::kArray || k == Kind::kString || k == Kind::kObject;
  if (name == "lower" || name == "upper") {
    if (k != Kind::kString) return RuntimeError(absl::StrCat("test ", name, " needs a string"));
    return operand.str == (name == "lower" ? JsToLower(operand.str) : JsToUpper(operand.str));
  }
  if (name == "defined") return k != Kind::kUndefined;
  if (name == "undefined") return k == Kind::kUndefined;
  if (name == "equalto" || name == "eq") {
    if (arg == nullptr) return RuntimeError(absl::StrCat("test ", name, " needs a value to compare with"));
    return StrictEquals(operand, *arg);
  }
  return absl::NotFoundError(absl::StrCat("chat template error: Unknown test: ", name));
}

void SetupGlobals(Environment& env) {
  env.Set("namespace", Value::Function([](std::vector<Value>& args, Environment&) -> absl::StatusOr<Value> {
    if (args.empty()) return Value::MakeObject(std::make_shared<Object>());
    if (args.size() != 1 || args[0].kind != Kind::kObject) {
      return RuntimeError("`namespace` expects either zero arguments or a single object argument");
    }
    return args[0];
  }));
  env.Set("false", Value::Bool(false));
  env.Set("true", Value::Bool(true));
  env.Set("none", Value::Null());
  env.Set("False", Value::Bool(false));
  env.Set("True", Value::Bool(true));
  env.Set("None", Value::Null());
  env.Set("raise_exception", Value::Function([](std::vector<Value>& args, Environment&) -> absl::StatusOr<Value> {
    const bool has_message = !args.empty() && args[0].kind != Kind::kUndefined && args[0].kind != Kind::kNull;
    return absl::InvalidArgumentError(has_message ? ToJsString(args[0]) : "");
  }));
  env.Set("range", Value::Function([](std::vector<Value>& args, Environment&) -> absl::StatusOr<Value> {
    for (const Value& a : args) {
      if (!a.IsNumber()) return RuntimeError("range() arguments must be numbers");
    }
    if (args.empty()) return RuntimeError("range() requires at least one argument");
    double start = 0, stop = args[0].number, step = 1;
    if (args.size() >= 2) {
      start = args[0].number;
      stop = args[1].number;
    }
    if (args.size() >= 3) step = args[2].number;
    Array out;
    for (double i = start; i < stop; i += step) {
      if (out.size() >= kMaxRangeLength) return RuntimeError("range() too long");
      out.push_back(std::floor(i) == i ? Value::Int(i) : Value::Float(i));
    }
    return Value::MakeArray(std::move(out));
  }));
  env.Set("strftime_now", Value::Function([](std::vector<Value>& args, Environment&) -> absl::StatusOr<Value> {
    if (args.empty() || args[0].kind != Kind::kString) return RuntimeError("strftime_now() needs a format string");
    return Value::String(Strftime(args[0].str));
  }));
}

}  // namespace moeserve::engine::chat
