#ifndef MOESERVE_ENGINE_GRAMMAR_JSON_MATCHER_H_
#define MOESERVE_ENGINE_GRAMMAR_JSON_MATCHER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/grammar/json_schema.h"

namespace moeserve::engine::grammar {

// Recognises, byte by byte, the JSON texts a compiled schema allows: a pushdown automaton whose
// alternatives (anyOf, enum members, optional properties) run side by side as threads, each a
// stack of frames. Every prefix it accepts can still be completed, so a decoder that only ever
// picks accepted bytes can always finish with a valid document.
//
// What it generates is a subset of what the schema matches, chosen to keep decoding finite
// and unambiguous:
//  - declared properties appear in declared order, optional ones possibly skipped, no others;
//  - whitespace runs between tokens are at most kMaxWhitespace bytes;
//  - numbers have at most 16 integer digits, 16 fraction digits and 3 exponent digits;
//  - nesting is at most kMaxDepth frames; strings must be valid UTF-8 without raw control bytes.
// Copyable (value semantics); not thread-safe.
class JsonMatcher {
 public:
  static constexpr int kMaxWhitespace = 24;
  static constexpr int kMaxDepth = 64;

  // `schema` must outlive the matcher.
  explicit JsonMatcher(const SchemaGraph* schema);

  // Consumes one byte. False, leaving the matcher unchanged, when no continuation allows it.
  bool Advance(uint8_t c);
  // All of `bytes` or nothing.
  bool AdvanceBytes(absl::string_view bytes);

  // The bytes so far form one complete value (trailing whitespace included).
  bool IsComplete() const;

  // Appends a description of the state that determines every future answer of Advance and
  // IsComplete (counters that cannot matter are left out), for caching per-state results.
  void AppendStateKey(std::string* out) const;

  struct Frame {
    uint8_t kind = 0;
    uint8_t state = 0;
    uint8_t aux = 0;
    const SchemaNode* node = nullptr;
    const std::string* text = nullptr;  // literals
    int32_t a = 0;
    int32_t b = 0;
    bool operator==(const Frame& o) const {
      return kind == o.kind && state == o.state && aux == o.aux && node == o.node &&
             text == o.text && a == o.a && b == o.b;
    }
  };
  struct Thread {
    std::vector<Frame> stack;
    int32_t whitespace = 0;  // length of the current whitespace run
    bool operator==(const Thread& o) const {
      return whitespace == o.whitespace && stack == o.stack;
    }
  };

 private:
  void Step(Thread t, uint8_t c, int depth, std::vector<Thread>* out) const;
  void StartValue(Thread t, const SchemaNode* node, uint8_t c, int depth,
                  std::vector<Thread>* out) const;
  void ObjectByte(Thread t, uint8_t c, int depth, std::vector<Thread>* out) const;
  void ArrayByte(Thread t, uint8_t c, int depth, std::vector<Thread>* out) const;

  std::vector<Thread> threads_;
  std::vector<Thread> scratch_;
};

}  // namespace moeserve::engine::grammar

#endif  // MOESERVE_ENGINE_GRAMMAR_JSON_MATCHER_H_
