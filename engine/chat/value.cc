#include "engine/chat/value.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/chat/js_text.h"

namespace moeserve::engine::chat {

const Value* Object::Find(absl::string_view key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

void Object::Set(const std::string& key, Value value) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    entries_[it->second].second = std::move(value);
    return;
  }
  index_.emplace(key, entries_.size());
  entries_.emplace_back(key, std::move(value));
}

void Object::Clear() {
  std::vector<std::pair<std::string, Value>> entries;
  entries.swap(entries_);  // destroyed after the object is consistent again
  index_.clear();
}

namespace {
thread_local std::vector<std::weak_ptr<Object>>* tracked_objects = nullptr;
}  // namespace

ObjectCycleBreaker::ObjectCycleBreaker() : previous_(tracked_objects) { tracked_objects = &objects_; }

ObjectCycleBreaker::~ObjectCycleBreaker() {
  tracked_objects = previous_;
  for (const std::weak_ptr<Object>& weak : objects_) {
    if (std::shared_ptr<Object> object = weak.lock()) object->Clear();
  }
}

int64_t ToInt64(double v) {
  constexpr double kLimit = 9007199254740992.0;  // 2^53
  if (std::isnan(v)) return 0;
  return static_cast<int64_t>(std::clamp(v, -kLimit, kLimit));
}

Value Value::Null() {
  Value v;
  v.kind = Kind::kNull;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind = Kind::kBool;
  v.flag = b;
  return v;
}

Value Value::Int(double n) {
  Value v;
  v.kind = Kind::kInt;
  v.number = n;
  return v;
}

Value Value::Float(double n) {
  Value v;
  v.kind = Kind::kFloat;
  v.number = n;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind = Kind::kString;
  v.str = std::move(s);
  return v;
}

Value Value::MakeArray(Array items, bool tuple) {
  Value v = SharedArray(std::make_shared<Array>(std::move(items)));
  v.flag = tuple;
  return v;
}

Value Value::SharedArray(std::shared_ptr<Array> items) {
  Value v;
  v.kind = Kind::kArray;
  v.array = std::move(items);
  return v;
}

Value Value::MakeObject(std::shared_ptr<Object> object, bool kwargs) {
  Value v;
  v.kind = Kind::kObject;
  v.flag = kwargs;
  v.object = std::move(object);
  if (tracked_objects != nullptr) tracked_objects->push_back(v.object);
  return v;
}

Value Value::Function(NativeFunction fn) {
  Value v;
  v.kind = Kind::kFunction;
  v.function = std::make_shared<const NativeFunction>(std::move(fn));
  return v;
}

const char* Value::TypeName() const {
  switch (kind) {
    case Kind::kUndefined: return "UndefinedValue";
    case Kind::kNull: return "NullValue";
    case Kind::kBool: return "BooleanValue";
    case Kind::kInt: return "IntegerValue";
    case Kind::kFloat: return "FloatValue";
    case Kind::kString: return "StringValue";
    case Kind::kArray: return flag ? "TupleValue" : "ArrayValue";
    case Kind::kObject: return flag ? "KeywordArgumentsValue" : "ObjectValue";
    case Kind::kFunction: return "FunctionValue";
  }
  return "UnknownValue";
}

bool Value::Truthy() const {
  if (kind == Kind::kArray) return !array->empty();
  if (kind == Kind::kObject) return object->size() > 0;
  return JsTruthy();
}

bool Value::JsTruthy() const {
  switch (kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return false;
    case Kind::kBool:
      return flag;
    case Kind::kInt:
    case Kind::kFloat:
      return number != 0 && !std::isnan(number);
    case Kind::kString:
      return !str.empty();
    default:
      return true;
  }
}

namespace {

std::string JoinDisplay(const Array& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ",";
    out += ToDisplayString(items[i]);
  }
  return out;
}

// JavaScript's loose-equality categories of the raw value.
enum class JsType { kUndefined, kNull, kBoolean, kNumber, kString, kObject };

JsType JsTypeOf(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return JsType::kUndefined;
    case Kind::kNull: return JsType::kUndefined;  // the reference's NullValue holds `undefined`
    case Kind::kBool: return JsType::kBoolean;
    case Kind::kInt:
    case Kind::kFloat: return JsType::kNumber;
    case Kind::kString: return JsType::kString;
    default: return JsType::kObject;
  }
}

bool SameObject(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  if (a.kind == Kind::kArray) return a.array == b.array;
  if (a.kind == Kind::kObject) return a.object == b.object;
  return a.function == b.function;
}

bool SameTypeEquals(const Value& a, const Value& b, JsType t) {
  switch (t) {
    case JsType::kUndefined:
    case JsType::kNull: return true;
    case JsType::kBoolean: return a.flag == b.flag;
    case JsType::kNumber: return a.number == b.number;
    case JsType::kString: return a.str == b.str;
    case JsType::kObject: return SameObject(a, b);
  }
  return false;
}

// Canonical array-index keys ("0", "17"), which JavaScript objects enumerate first.
bool IsArrayIndexKey(const std::string& key, uint64_t* index) {
  if (key.empty() || key.size() > 10) return false;
  if (key.size() > 1 && key[0] == '0') return false;
  uint64_t v = 0;
  for (const char c : key) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v >= 4294967295ull) return false;
  *index = v;
  return true;
}

}  // namespace

std::string ToDisplayString(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNull: return "undefined";  // the reference's NullValue holds `undefined`
    case Kind::kBool: return v.flag ? "true" : "false";
    case Kind::kInt: return JsNumberToString(v.number);
    case Kind::kFloat: return JsFloatToString(v.number);
    case Kind::kString: return v.str;
    case Kind::kArray: return JoinDisplay(*v.array);
    case Kind::kObject: return "[object Map]";
    case Kind::kFunction: return "function";
  }
  return "";
}

std::string ToJsString(const Value& v) {
  if (v.kind == Kind::kFloat) return JsNumberToString(v.number);
  return ToDisplayString(v);
}

std::string ToJoinString(const Value& v) {
  if (v.kind == Kind::kUndefined || v.kind == Kind::kNull) return "";
  return ToJsString(v);
}

bool LooseEquals(const Value& a, const Value& b) {
  const JsType ta = JsTypeOf(a), tb = JsTypeOf(b);
  if (ta == tb) return SameTypeEquals(a, b, ta);
  const auto nullish = [](JsType t) { return t == JsType::kUndefined || t == JsType::kNull; };
  if (nullish(ta) && nullish(tb)) return true;
  if (nullish(ta) || nullish(tb)) return false;
  if (ta == JsType::kNumber && tb == JsType::kString) return a.number == JsToNumber(b.str);
  if (ta == JsType::kString && tb == JsType::kNumber) return JsToNumber(a.str) == b.number;
  if (ta == JsType::kBoolean) return LooseEquals(Value::Int(a.flag ? 1 : 0), b);
  if (tb == JsType::kBoolean) return LooseEquals(a, Value::Int(b.flag ? 1 : 0));
  if (ta == JsType::kObject) return LooseEquals(Value::String(ToDisplayString(a)), b);
  if (tb == JsType::kObject) return LooseEquals(a, Value::String(ToDisplayString(b)));
  return false;
}

bool StrictEquals(const Value& a, const Value& b) {
  const JsType ta = JsTypeOf(a);
  return ta == JsTypeOf(b) && SameTypeEquals(a, b, ta);
}

absl::StatusOr<std::string> ToJson(const Value& v, int indent, int depth) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return std::string("null");
    case Kind::kBool:
      return std::string(v.flag ? "true" : "false");
    case Kind::kInt:
    case Kind::kFloat:
      return std::isfinite(v.number) ? JsNumberToString(v.number) : std::string("null");
    case Kind::kString:
      return JsonQuote(v.str);
    default:
      break;
  }
  const bool is_array = v.kind == Kind::kArray && !v.flag;
  const bool is_object = v.kind == Kind::kObject && !v.flag;
  if (!is_array && !is_object) {
    return absl::InvalidArgumentError(absl::StrCat("Cannot convert to JSON: ", v.TypeName()));
  }
  if (depth > 512) return absl::InvalidArgumentError("tojson: value nested too deeply");
  const std::string unit(indent > 0 ? indent : 0, ' ');
  std::string base_padding = "\n";
  for (int i = 0; i < depth; ++i) base_padding += unit;
  const std::string child_padding = base_padding + unit;
  std::vector<std::string> parts;
  if (is_array) {
    for (const Value& item : *v.array) {
      absl::StatusOr<std::string> s = ToJson(item, indent, depth + 1);
      if (!s.ok()) return s.status();
      parts.push_back(*std::move(s));
    }
    if (indent > 0) {
      return absl::StrCat("[", child_padding, absl::StrJoin(parts, absl::StrCat(",", child_padding)),
                          base_padding, "]");
    }
    return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
  }
  for (const auto& [key, item] : v.object->entries()) {
    absl::StatusOr<std::string> s = ToJson(item, indent, depth + 1);
    if (!s.ok()) return s.status();
    std::string entry = absl::StrCat("\"", key, "\": ", *s);
    parts.push_back(indent > 0 ? absl::StrCat(child_padding, entry) : std::move(entry));
  }
  if (indent > 0) return absl::StrCat("{", absl::StrJoin(parts, ","), base_padding, "}");
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

Value FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::Null();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::Int(static_cast<double>(json.get<int64_t>()));
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value::Int(static_cast<double>(json.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: {
      const double d = json.get<double>();
      return std::isfinite(d) && std::floor(d) == d ? Value::Int(d) : Value::Float(d);
    }
    case nlohmann::ordered_json::value_t::string:
      return Value::String(json.get_ref<const std::string&>());
    case nlohmann::ordered_json::value_t::array: {
      Array items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(FromJson(item));
      return Value::MakeArray(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      std::vector<std::pair<uint64_t, std::string>> index_keys;
      std::vector<std::string> other_keys;
      for (const auto& [key, item] : json.items()) {
        uint64_t index = 0;
        if (IsArrayIndexKey(key, &index)) {
          index_keys.emplace_back(index, key);
        } else {
          other_keys.push_back(key);
        }
      }
      std::sort(index_keys.begin(), index_keys.end());
      auto object = std::make_shared<Object>();
      for (const auto& [index, key] : index_keys) object->Set(key, FromJson(json.at(key)));
      for (const auto& key : other_keys) object->Set(key, FromJson(json.at(key)));
      return Value::MakeObject(std::move(object));
    }
    default:
      return Value::Undefined();  // Binary and discarded values have no template meaning.
  }
}

}  // namespace moeserve::engine::chat
