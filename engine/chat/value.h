#ifndef MOESERVE_ENGINE_CHAT_VALUE_H_
#define MOESERVE_ENGINE_CHAT_VALUE_H_

// Runtime values of the chat-template interpreter. They mirror @huggingface/jinja's runtime
// values: numbers are doubles tagged integer or float, arrays and objects are shared by reference
// (the reference mutates them in place), strings are UTF-8.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine::chat {

class Environment;
struct Value;

using Array = std::vector<Value>;

class Object;

// A callable: builtin functions, bound methods, macros. `args` holds positional arguments and,
// when keyword arguments were passed, a trailing keyword-arguments object.
using NativeFunction = std::function<absl::StatusOr<Value>(std::vector<Value>& args, Environment& env)>;

enum class Kind { kUndefined, kNull, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };

struct Value {
  Kind kind = Kind::kUndefined;
  // kBool: the value. kArray: a tuple. kObject: a keyword-arguments object.
  bool flag = false;
  double number = 0;
  std::string str;
  std::shared_ptr<Array> array;
  std::shared_ptr<Object> object;
  std::shared_ptr<const NativeFunction> function;

  static Value Undefined() { return Value(); }
  static Value Null();
  static Value Bool(bool b);
  static Value Int(double v);
  static Value Float(double v);
  static Value String(std::string s);
  static Value MakeArray(Array items, bool tuple = false);
  static Value SharedArray(std::shared_ptr<Array> items);
  static Value MakeObject(std::shared_ptr<Object> object, bool kwargs = false);
  static Value Function(NativeFunction fn);

  bool IsNumber() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  bool IsKwargs() const { return kind == Kind::kObject && flag; }
  // The reference's type name ("IntegerValue", "TupleValue", ...), used in messages and tests.
  const char* TypeName() const;
  // Python-style truthiness (__bool__): empty arrays and objects are false.
  bool Truthy() const;
  // JavaScript truthiness of the underlying value (!!value): arrays and objects are true.
  bool JsTruthy() const;
};

// An insertion-ordered string-keyed map. Defined after Value: its inline members need Value
// complete (clang rejects them otherwise).
class Object {
 public:
  const Value* Find(absl::string_view key) const;
  void Set(const std::string& key, Value value);
  size_t size() const { return entries_.size(); }
  void Clear();
  const std::vector<std::pair<std::string, Value>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<std::string, Value>> entries_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// A number as an integer index or count, saturated to +-2^53 (NaN becomes 0).
int64_t ToInt64(double v);

// While alive, records every object made on this thread and, on destruction, empties the ones
// still alive, breaking reference cycles that templates can build (`{% set d.self = d %}`).
class ObjectCycleBreaker {
 public:
  ObjectCycleBreaker();
  ~ObjectCycleBreaker();
  ObjectCycleBreaker(const ObjectCycleBreaker&) = delete;
  ObjectCycleBreaker& operator=(const ObjectCycleBreaker&) = delete;

 private:
  std::vector<std::weak_ptr<Object>>* previous_;
  std::vector<std::weak_ptr<Object>> objects_;
};

// RuntimeValue.toString(): how a value prints in template output.
std::string ToDisplayString(const Value& v);
// String(value.value): JavaScript's conversion of the raw value (floats print as "3", not "3.0").
std::string ToJsString(const Value& v);
// The raw value as an element of Array.prototype.join: null and undefined become "".
std::string ToJoinString(const Value& v);
// left.value == right.value (JavaScript loose equality).
bool LooseEquals(const Value& a, const Value& b);
// left.value === right.value (strict equality; arrays and objects by identity).
bool StrictEquals(const Value& a, const Value& b);

// JSON.stringify-style rendering with @huggingface/jinja's spacing; `indent` 0 means compact.
absl::StatusOr<std::string> ToJson(const Value& v, int indent, int depth = 0);

// Converts JSON context into runtime values the way the reference converts JavaScript objects:
// integral numbers become integers, integer-like object keys come first in ascending order.
Value FromJson(const nlohmann::ordered_json& json);

}  // namespace moeserve::engine::chat

#endif  // MOESERVE_ENGINE_CHAT_VALUE_H_
