#ifndef MOESERVE_ENGINE_REASONING_H_
#define MOESERVE_ENGINE_REASONING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moeserve::engine {

// Splits streamed model text into reasoning (the part inside <think> ... </think>) and content,
// as DeepSeek's API returns reasoning_content and content.
//
// Rules, applied to the byte stream (chunk boundaries never change the result):
//  - Opening: at the very start of the text, optional whitespace (' ', '\t', '\r', '\n')
//    followed by "<think>" opens reasoning; the whitespace and the tag are dropped, and so is
//    ONE "\n" directly after the tag. This applies whether or not starts_in_reasoning is set
//    (a model may repeat the tag its template already opened). With starts_in_reasoning and no
//    leading tag, the text is reasoning from its first byte, whitespace included.
//    Without starts_in_reasoning and no leading tag, everything is content.
//  - Closing: the first "</think>" while in reasoning ends it; the tag and every '\n' directly
//    after it (any number, across chunks) are dropped ("</think>\n\n" -> content starts at
//    the next byte, as DeepSeek's API returns it).
//  - Any other "<think>" / "</think>" (inside reasoning, or in content) is ordinary text.
//
// Hold-back: bytes that may still become a tag are kept until the next chunk decides them: a
// suffix that is a proper prefix of "</think>" while in reasoning; and, at the start only, the
// leading whitespace plus any prefix of "<think>". Flush() releases them as text.
// Output is byte-exact (UTF-8 passes through untouched; tags are ASCII, so a multi-byte
// character is never cut by the splitter itself). Not thread-safe.
class ReasoningSplitter {
 public:
  struct Delta {
    std::string reasoning;
    std::string content;
  };

  // `starts_in_reasoning`: the prompt already opened <think> (R1's generation prompt ends
  // "<think>\n"), so the model's text begins inside reasoning.
  explicit ReasoningSplitter(bool starts_in_reasoning);

  // Feeds the next chunk; returns what is decided so far.
  Delta Add(absl::string_view chunk);
  // End of stream: returns the held-back bytes as text of the current section.
  Delta Flush();

  // True while the text seen so far is inside reasoning.
  bool in_reasoning() const { return in_reasoning_; }

 private:
  enum class Phase { kStart, kAfterOpen, kReasoning, kAfterClose, kContent };

  Phase phase_;
  bool in_reasoning_;
  std::string pending_;  // held-back bytes
};

// reasoning_effort -> token budget for the reasoning section.
struct ThinkingBudget {
  int64_t low = 256;
  int64_t medium = 1024;
  int64_t high = 4096;

  // "low" | "medium" | "high" (exact, lower case); anything else is InvalidArgument naming
  // the allowed values.
  absl::StatusOr<int64_t> ForEffort(absl::string_view effort) const;
};

// Caps the reasoning section at a token budget, in token ids only (no tokenizer). The caller
// supplies the ids of the close sequence (the tokenization of "</think>\n\n"); its first id
// must be the one the model itself uses to close reasoning (R1's "</think>" token).
//
// Usage: append AtStart() before decoding; then after each token generated while in
// reasoning, call OnReasoningToken(token) and append what it returns to the sequence as if
// generated (they are not sampled). Once it returns the close ids, or the model closes
// reasoning itself, done() is true and every later call returns nothing.
class ThinkingBudgetEnforcer {
 public:
  // `budget` >= 0 reasoning tokens (0: close before the first one). `close_ids` non-empty.
  ThinkingBudgetEnforcer(int64_t budget, std::vector<int32_t> close_ids);

  // The close ids if the budget is 0, else empty. Marks done() when it returns ids.
  absl::Span<const int32_t> AtStart();
  // Counts `token` against the budget. Returns the close ids when this token used up the
  // budget (the model did not close); empty otherwise, and always empty when `token` is
  // close_ids[0] (the model closed reasoning itself).
  absl::Span<const int32_t> OnReasoningToken(int32_t token);

  bool done() const { return done_; }
  // Reasoning tokens counted so far (excluding the model's own close token).
  int64_t used() const { return used_; }
  // True when the enforcer (not the model) closed reasoning.
  bool forced() const { return forced_; }

 private:
  int64_t budget_;
  std::vector<int32_t> close_ids_;
  int64_t used_ = 0;
  bool done_ = false;
  bool forced_ = false;
};

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_REASONING_H_
