#include "engine/grammar/json_matcher.h"

#include <utility>

namespace moeserve::engine::grammar {
namespace {

using Kind = SchemaNode::Kind;
using Frame = JsonMatcher::Frame;
using Thread = JsonMatcher::Thread;

enum FrameKind : uint8_t { kValue, kObject, kArray, kString, kNumber, kLiteral };

// Object states (the key and value states hold while a child frame is on top).
enum : uint8_t { kObjOpen, kObjKey, kObjColon, kObjValue, kObjAfter, kObjComma };
// Array states.
enum : uint8_t { kArrOpen, kArrItem, kArrAfter, kArrComma };
// String states; b counts the continuation bytes still due, aux restricts the next one.
enum : uint8_t { kStrNormal, kStrCont, kStrEscape, kStrHex };
enum : uint8_t { kContAny, kContA0BF, kCont809F, kCont90BF, kCont808F };
// Number states; a counts digits of the current part, aux = 1 for integers.
enum : uint8_t { kNumSign, kNumZero, kNumInt, kNumDot, kNumFrac, kNumExp, kNumExpSign, kNumExpDigits };

constexpr int32_t kMaxIntDigits = 16;
constexpr int32_t kMaxFracDigits = 16;
constexpr int32_t kMaxExpDigits = 3;
// Nested anyOf / $ref expansions that consume nothing (a cycle in the schema ends here).
constexpr int kMaxExpansion = 32;

const std::string kTrue = "true";
const std::string kFalse = "false";
const std::string kNull = "null";

const SchemaNode& AnyNode() {
  static const SchemaNode node;
  return node;
}
const SchemaNode& AnyObjectNode() {
  static const SchemaNode node = [] {
    SchemaNode n;
    n.kind = Kind::kObject;
    n.extra_values = &AnyNode();
    return n;
  }();
  return node;
}
const SchemaNode& AnyArrayNode() {
  static const SchemaNode node = [] {
    SchemaNode n;
    n.kind = Kind::kArray;
    n.items = &AnyNode();
    return n;
  }();
  return node;
}

bool IsWhitespace(uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
bool IsDigit(uint8_t c) { return c >= '0' && c <= '9'; }
bool IsHex(uint8_t c) {
  return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

Frame MakeFrame(uint8_t kind, const SchemaNode* node, uint8_t state = 0) {
  Frame f;
  f.kind = kind;
  f.node = node;
  f.state = state;
  return f;
}

// No required property at or after index `from`.
bool NoRequiredFrom(const SchemaNode* node, int32_t from) {
  for (size_t j = static_cast<size_t>(from); j < node->properties.size(); ++j) {
    if (node->properties[j].required) return false;
  }
  return true;
}

// A finished child updates its parent's state.
void ChildDone(Thread& t) {
  if (t.stack.empty()) return;
  Frame& p = t.stack.back();
  if (p.kind == kObject) {
    if (p.state == kObjKey) {
      p.state = kObjColon;
    } else if (p.state == kObjValue) {
      p.state = kObjAfter;
      if (!p.node->properties.empty()) ++p.a;
    }
  } else if (p.kind == kArray && p.state == kArrItem) {
    p.state = kArrAfter;
    ++p.a;
  }
}

void Finish(Thread& t) {
  t.stack.pop_back();
  ChildDone(t);
}

bool NumberAccepting(const Frame& f) {
  return f.state == kNumZero || f.state == kNumInt || f.state == kNumFrac ||
         f.state == kNumExpDigits;
}

// Consumes c within the number if it continues it.
bool NumberByte(Frame& f, uint8_t c) {
  const bool integer = f.aux == 1;
  const bool dot_or_exp_ok = !integer;
  switch (f.state) {
    case kNumSign:
      if (c == '0') { f.state = kNumZero; return true; }
      if (IsDigit(c)) { f.state = kNumInt; f.a = 1; return true; }
      return false;
    case kNumZero:
    case kNumInt:
      if (f.state == kNumInt && IsDigit(c) && f.a < kMaxIntDigits) { ++f.a; return true; }
      if (dot_or_exp_ok && c == '.') { f.state = kNumDot; return true; }
      if (dot_or_exp_ok && (c == 'e' || c == 'E')) { f.state = kNumExp; return true; }
      return false;
    case kNumDot:
      if (IsDigit(c)) { f.state = kNumFrac; f.a = 1; return true; }
      return false;
    case kNumFrac:
      if (IsDigit(c) && f.a < kMaxFracDigits) { ++f.a; return true; }
      if (c == 'e' || c == 'E') { f.state = kNumExp; return true; }
      return false;
    case kNumExp:
      if (c == '+' || c == '-') { f.state = kNumExpSign; return true; }
      [[fallthrough]];
    case kNumExpSign:
      if (IsDigit(c)) { f.state = kNumExpDigits; f.a = 1; return true; }
      return false;
    case kNumExpDigits:
      if (IsDigit(c) && f.a < kMaxExpDigits) { ++f.a; return true; }
      return false;
  }
  return false;
}

// Consumes c within a string. `done` is set when c closed it.
bool StringByte(Frame& f, uint8_t c, bool* done) {
  const int64_t min_length = f.node != nullptr ? f.node->min_length : 0;
  const int64_t max_length = f.node != nullptr ? f.node->max_length : -1;
  const bool room = max_length < 0 || f.a < max_length;
  switch (f.state) {
    case kStrNormal:
      if (c == '"') {
        if (f.a < min_length) return false;
        *done = true;
        return true;
      }
      if (!room || c < 0x20 || c == 0x7f) return false;
      if (c == '\\') { f.state = kStrEscape; return true; }
      if (c < 0x80) { ++f.a; return true; }
      if (c >= 0xc2 && c <= 0xdf) { f.b = 1; f.aux = kContAny; }
      else if (c == 0xe0) { f.b = 2; f.aux = kContA0BF; }
      else if (c == 0xed) { f.b = 2; f.aux = kCont809F; }
      else if (c >= 0xe1 && c <= 0xef) { f.b = 2; f.aux = kContAny; }
      else if (c == 0xf0) { f.b = 3; f.aux = kCont90BF; }
      else if (c >= 0xf1 && c <= 0xf3) { f.b = 3; f.aux = kContAny; }
      else if (c == 0xf4) { f.b = 3; f.aux = kCont808F; }
      else return false;
      ++f.a;
      f.state = kStrCont;
      return true;
    case kStrCont: {
      uint8_t lo = 0x80, hi = 0xbf;
      if (f.aux == kContA0BF) lo = 0xa0;
      if (f.aux == kCont809F) hi = 0x9f;
      if (f.aux == kCont90BF) lo = 0x90;
      if (f.aux == kCont808F) hi = 0x8f;
      if (c < lo || c > hi) return false;
      f.aux = kContAny;
      if (--f.b == 0) f.state = kStrNormal;
      return true;
    }
    case kStrEscape:
      if (c == 'u') { f.state = kStrHex; f.b = 4; return true; }
      if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
          c == 't') {
        f.state = kStrNormal;
        ++f.a;
        return true;
      }
      return false;
    case kStrHex:
      if (!IsHex(c)) return false;
      if (--f.b == 0) {
        f.state = kStrNormal;
        ++f.a;
      }
      return true;
  }
  return false;
}

void AppendInt(std::string* out, int64_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

}  // namespace

JsonMatcher::JsonMatcher(const SchemaGraph* schema) {
  Thread t;
  t.stack.push_back(MakeFrame(kValue, schema->root()));
  threads_.push_back(std::move(t));
}

void JsonMatcher::Step(Thread t, uint8_t c, int depth, std::vector<Thread>* out) const {
  if (t.stack.empty()) {  // after the value: only trailing whitespace
    if (IsWhitespace(c) && t.whitespace < kMaxWhitespace) {
      ++t.whitespace;
      out->push_back(std::move(t));
    }
    return;
  }
  Frame& f = t.stack.back();
  switch (f.kind) {
    case kString: {
      bool done = false;
      if (!StringByte(f, c, &done)) return;
      if (done) Finish(t);
      t.whitespace = 0;
      out->push_back(std::move(t));
      return;
    }
    case kLiteral:
      if (c != static_cast<uint8_t>((*f.text)[static_cast<size_t>(f.a)])) return;
      if (++f.a == static_cast<int32_t>(f.text->size())) Finish(t);
      t.whitespace = 0;
      out->push_back(std::move(t));
      return;
    case kNumber:
      if (NumberByte(f, c)) {
        t.whitespace = 0;
        out->push_back(std::move(t));
      } else if (NumberAccepting(f)) {
        Finish(t);
        Step(std::move(t), c, depth, out);
      }
      return;
    default:
      break;
  }
  // Value, object and array frames on top are all between tokens: whitespace may run here.
  if (IsWhitespace(c)) {
    if (t.whitespace < kMaxWhitespace) {
      ++t.whitespace;
      out->push_back(std::move(t));
    }
    return;
  }
  t.whitespace = 0;
  if (f.kind == kValue) {
    const SchemaNode* node = f.node;
    StartValue(std::move(t), node, c, depth, out);
  } else if (f.kind == kObject) {
    ObjectByte(std::move(t), c, depth, out);
  } else if (f.kind == kArray) {
    ArrayByte(std::move(t), c, depth, out);
  }
}

// t's top frame is the value frame of `node`; c (not whitespace) is the value's first byte.
void JsonMatcher::StartValue(Thread t, const SchemaNode* node, uint8_t c, int depth,
                             std::vector<Thread>* out) const {
  if (depth > kMaxExpansion) return;
  Frame& f = t.stack.back();
  switch (node->kind) {
    case Kind::kAnyOf:
      for (const SchemaNode* alt : node->alternatives) StartValue(t, alt, c, depth + 1, out);
      return;
    case Kind::kLiterals:
      for (const std::string& literal : node->literals) {
        if (literal.empty() || static_cast<uint8_t>(literal[0]) != c) continue;
        Thread u = t;
        Frame& g = u.stack.back();
        g = MakeFrame(kLiteral, node);
        g.text = &literal;
        g.a = 1;
        if (literal.size() == 1) Finish(u);
        out->push_back(std::move(u));
      }
      return;
    case Kind::kAny:
      if (c == '{') return StartValue(std::move(t), &AnyObjectNode(), c, depth + 1, out);
      if (c == '[') return StartValue(std::move(t), &AnyArrayNode(), c, depth + 1, out);
      if (c == '"') {
        f = MakeFrame(kString, nullptr);
        out->push_back(std::move(t));
        return;
      }
      if (c == '-' || IsDigit(c)) {
        f = MakeFrame(kNumber, node);
        if (c == '-') f.state = kNumSign;
        else if (c == '0') f.state = kNumZero;
        else { f.state = kNumInt; f.a = 1; }
        out->push_back(std::move(t));
        return;
      }
      [[fallthrough]];
    case Kind::kBoolean:
    case Kind::kNull: {
      const std::string* text = nullptr;
      if (c == 't' && node->kind != Kind::kNull) text = &kTrue;
      if (c == 'f' && node->kind != Kind::kNull) text = &kFalse;
      if (c == 'n' && node->kind != Kind::kBoolean) text = &kNull;
      if (text == nullptr) return;
      f = MakeFrame(kLiteral, node);
      f.text = text;
      f.a = 1;
      out->push_back(std::move(t));
      return;
    }
    case Kind::kObject:
      if (c != '{' || t.stack.size() >= kMaxDepth) return;
      f = MakeFrame(kObject, node, kObjOpen);
      out->push_back(std::move(t));
      return;
    case Kind::kArray:
      if (c != '[' || t.stack.size() >= kMaxDepth) return;
      f = MakeFrame(kArray, node, kArrOpen);
      out->push_back(std::move(t));
      return;
    case Kind::kString:
      if (c != '"') return;
      f = MakeFrame(kString, node);
      out->push_back(std::move(t));
      return;
    case Kind::kNumber:
    case Kind::kInteger:
      if (c != '-' && !IsDigit(c)) return;
      f = MakeFrame(kNumber, node);
      f.aux = node->kind == Kind::kInteger ? 1 : 0;
      if (c == '-') f.state = kNumSign;
      else if (c == '0') f.state = kNumZero;
      else { f.state = kNumInt; f.a = 1; }
      out->push_back(std::move(t));
      return;
  }
}

void JsonMatcher::ObjectByte(Thread t, uint8_t c, int depth, std::vector<Thread>* out) const {
  (void)depth;
  Frame& f = t.stack.back();
  const SchemaNode* node = f.node;
  const bool declared = !node->properties.empty();
  switch (f.state) {
    case kObjOpen:
    case kObjComma:
      if (c == '}' && f.state == kObjOpen) {
        if (!declared || NoRequiredFrom(node, f.a)) {
          Finish(t);
          out->push_back(std::move(t));
        }
        return;
      }
      if (c != '"' || t.stack.size() >= kMaxDepth) return;
      if (declared) {
        for (size_t j = static_cast<size_t>(f.a); j < node->properties.size(); ++j) {
          Thread u = t;
          Frame& g = u.stack.back();
          g.a = static_cast<int32_t>(j);
          g.state = kObjKey;
          Frame key = MakeFrame(kLiteral, node);
          key.text = &node->properties[j].key;
          key.a = 1;
          u.stack.push_back(key);
          out->push_back(std::move(u));
          if (node->properties[j].required) break;  // it cannot be skipped
        }
      } else if (node->extra_values != nullptr) {
        f.state = kObjKey;
        t.stack.push_back(MakeFrame(kString, nullptr));
        out->push_back(std::move(t));
      }
      return;
    case kObjColon:
      if (c != ':') return;
      f.state = kObjValue;
      t.stack.push_back(MakeFrame(
          kValue, declared ? node->properties[static_cast<size_t>(f.a)].value : node->extra_values));
      out->push_back(std::move(t));
      return;
    case kObjAfter:
      if (c == ',') {
        if (declared && f.a >= static_cast<int32_t>(node->properties.size())) return;
        f.state = kObjComma;
        out->push_back(std::move(t));
      } else if (c == '}') {
        if (declared && !NoRequiredFrom(node, f.a)) return;
        Finish(t);
        out->push_back(std::move(t));
      }
      return;
    default:
      return;
  }
}

void JsonMatcher::ArrayByte(Thread t, uint8_t c, int depth, std::vector<Thread>* out) const {
  Frame& f = t.stack.back();
  const SchemaNode* node = f.node;
  switch (f.state) {
    case kArrOpen:
      if (c == ']') {
        if (node->min_items == 0) {
          Finish(t);
          out->push_back(std::move(t));
        }
        return;
      }
      if (node->max_items == 0) return;
      break;
    case kArrAfter:
      if (c == ',') {
        if (node->max_items >= 0 && f.a >= node->max_items) return;
        f.state = kArrComma;
        out->push_back(std::move(t));
      } else if (c == ']') {
        if (f.a < node->min_items) return;
        Finish(t);
        out->push_back(std::move(t));
      }
      return;
    case kArrComma:
      break;
    default:
      return;
  }
  if (t.stack.size() >= kMaxDepth) return;
  f.state = kArrItem;
  t.stack.push_back(MakeFrame(kValue, node->items));
  StartValue(std::move(t), node->items, c, depth + 1, out);
}

bool JsonMatcher::Advance(uint8_t c) {
  scratch_.clear();
  for (const Thread& t : threads_) Step(t, c, 0, &scratch_);
  if (scratch_.empty()) return false;
  // Alternatives that reach the same state are one from here on.
  std::vector<Thread> unique;
  unique.reserve(scratch_.size());
  for (Thread& t : scratch_) {
    bool seen = false;
    for (const Thread& u : unique) seen = seen || u == t;
    if (!seen) unique.push_back(std::move(t));
  }
  threads_.swap(unique);
  scratch_.clear();
  return true;
}

bool JsonMatcher::AdvanceBytes(absl::string_view bytes) {
  JsonMatcher copy = *this;
  for (char ch : bytes) {
    if (!copy.Advance(static_cast<uint8_t>(ch))) return false;
  }
  *this = std::move(copy);
  return true;
}

bool JsonMatcher::IsComplete() const {
  for (const Thread& t : threads_) {
    if (t.stack.empty()) return true;
    if (t.stack.size() == 1 && t.stack[0].kind == kNumber && NumberAccepting(t.stack[0])) {
      return true;
    }
  }
  return false;
}

void JsonMatcher::AppendStateKey(std::string* out) const {
  for (const Thread& t : threads_) {
    AppendInt(out, t.whitespace);
    AppendInt(out, static_cast<int64_t>(t.stack.size()));
    for (const Frame& f : t.stack) {
      int64_t a = f.a;
      // Lengths and counts without bounds cannot change any answer.
      if (f.kind == kString && (f.node == nullptr || (f.node->min_length == 0 && f.node->max_length < 0))) a = 0;
      if (f.kind == kArray && f.node->min_items == 0 && f.node->max_items < 0) a = 0;
      out->push_back(static_cast<char>(f.kind));
      out->push_back(static_cast<char>(f.state));
      out->push_back(static_cast<char>(f.aux));
      AppendInt(out, reinterpret_cast<intptr_t>(f.node));
      AppendInt(out, reinterpret_cast<intptr_t>(f.text));
      AppendInt(out, a);
      AppendInt(out, f.b);
    }
    out->push_back('|');
  }
}

}  // namespace moeserve::engine::grammar
