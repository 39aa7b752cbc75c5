#ifndef MOESERVE_ENGINE_GRAMMAR_TOOL_CALL_CONSTRAINT_H_
#define MOESERVE_ENGINE_GRAMMAR_TOOL_CALL_CONSTRAINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/token_constraint.h"

namespace moeserve::engine::grammar {

// The shape of a forced tool call, as token ids: whoever builds it (the gateway) encodes the
// model family's markup, so the worker follows ids and schemas and knows no chat format.
//   open, then a call: options[i].head followed by JSON arguments matching options[i].arguments
//   and then tail; then either separator and another call (only when `parallel`), or close and
//   the end token.
// For DeepSeek-V3/R1: open "<｜tool▁calls▁begin｜>", head "<｜tool▁call▁begin｜>function
// <｜tool▁sep｜>NAME\n```json\n", tail "\n```<｜tool▁call▁end｜>", separator "\n", close
// "<｜tool▁calls▁end｜>".
// `Arguments` is how each option's arguments are held: compiled (ToolCallGrammar) or as JSON
// Schema text (ToolCallSpec).
template <typename Arguments>
struct ToolCallMarkup {
  struct Option {
    std::vector<int32_t> head;
    Arguments arguments;
  };
  std::vector<int32_t> open;
  std::vector<Option> options;
  std::vector<int32_t> tail;
  std::vector<int32_t> separator;
  std::vector<int32_t> close;
  bool parallel = true;
};
using ToolCallGrammar = ToolCallMarkup<std::shared_ptr<const SchemaGraph>>;

// ToolCallGrammar as it travels (moeserve.v1.ToolCallGrammar; the gateway's request and the
// worker's job both hold one): the arguments schemas as JSON Schema text, not yet compiled.
using ToolCallSpec = ToolCallMarkup<std::string>;

// Compiles each option's schema and validates the whole (ValidateToolCallGrammar).
// InvalidArgument naming the problem.
absl::StatusOr<std::shared_ptr<const ToolCallGrammar>> CompileToolCallSpec(
    const ToolCallSpec& spec, int32_t vocab_size);

// InvalidArgument unless there is at least one option, every id is inside the vocabulary, and
// the heads, tail and close are non-empty (a call must be told apart from its arguments).
absl::Status ValidateToolCallGrammar(const ToolCallGrammar& grammar, int32_t vocab_size);

// Holds an answer to ToolCallGrammar: up to kMaxLead whitespace tokens may come first (the
// blank line a reasoning model writes after "</think>", or a thinking budget forces), then the
// markup is forced token by token (where several options
// are open, any of their next tokens), the arguments go through a TokenConstraint for the chosen
// option's schema, and the end token is allowed only after close. Not thread-safe.
class ToolCallConstraint : public OutputConstraint {
 public:
  ToolCallConstraint(std::shared_ptr<const Vocabulary> vocab,
                     std::shared_ptr<const ToolCallGrammar> grammar);

  void MaskLogits(absl::Span<float> logits) override;
  absl::Status Accept(int32_t token) override;
  bool IsComplete() const override { return done_; }

  static constexpr int kMaxLead = 4;

 private:
  static constexpr int kEnd = -1;
  // A forced stretch of markup and where it leads: the arguments of option `next`, or kEnd.
  struct Path {
    std::vector<int32_t> tokens;
    int next = kEnd;
  };
  std::vector<Path> StartPaths() const;
  std::vector<Path> AfterCallPaths() const;
  absl::Status AcceptForced(int32_t token);
  absl::Status Refuse(int32_t token) const;

  std::shared_ptr<const Vocabulary> vocab_;
  std::shared_ptr<const ToolCallGrammar> grammar_;
  std::vector<Path> paths_;  // markup: the paths still consistent with what came, at pos_
  size_t pos_ = 0;
  std::unique_ptr<TokenConstraint> arguments_;  // set while a call's arguments are written
  std::vector<int32_t> after_call_first_;       // the tokens that may end the arguments
  bool done_ = false;
  bool started_ = false;  // the first markup token came
  int lead_ = 0;          // whitespace tokens before it
};

}  // namespace moeserve::engine::grammar

#endif  // MOESERVE_ENGINE_GRAMMAR_TOOL_CALL_CONSTRAINT_H_
