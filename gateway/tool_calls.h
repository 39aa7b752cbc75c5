#ifndef MOESERVE_GATEWAY_TOOL_CALLS_H_
#define MOESERVE_GATEWAY_TOOL_CALLS_H_

// OpenAI tool calling on DeepSeek-V3/R1 models. The model calls tools in its own markup:
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```
//   <｜tool▁call▁end｜>[\n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜>]<｜tool▁calls▁end｜>
// (each marker one added token). This file reads "tools", "tool_choice" and
// "parallel_tool_calls" from a chat request, describes the tools to the model, builds the
// forced-call grammar for tool_choice "required" or a named function (token ids, enforced by
// the worker), and parses the markup out of the answer text into OpenAI tool_calls.

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

inline constexpr absl::string_view kToolCallsBegin = "<｜tool▁calls▁begin｜>";
inline constexpr absl::string_view kToolCallsEnd = "<｜tool▁calls▁end｜>";
inline constexpr absl::string_view kToolCallBegin = "<｜tool▁call▁begin｜>";
inline constexpr absl::string_view kToolCallEnd = "<｜tool▁call▁end｜>";
inline constexpr absl::string_view kToolSep = "<｜tool▁sep｜>";

struct ToolDefinition {
  std::string name;
  std::string description;
  nlohmann::ordered_json parameters;  // a JSON Schema; null when the function takes none
};

enum class ToolChoice { kNone, kAuto, kRequired, kNamed };

struct ToolsRequest {
  std::vector<ToolDefinition> tools;
  ToolChoice choice = ToolChoice::kNone;
  std::string choice_name;  // kNamed
  bool parallel = true;     // "parallel_tool_calls"
};

// Reads "tools", "tool_choice" and "parallel_tool_calls" from a chat request body (re-parsed
// keeping key order, so parameters are described in their declared order). Rules:
//  - tools: at most 128 entries {"type": "function", "function": {"name", "description"?,
//    "parameters"?, "strict"?}}; names match [a-zA-Z0-9_-]{1,64} and are unique; parameters is
//    an object (absent: no parameters).
//  - tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name"}}
//    naming one of the tools; default "auto" with tools, "none" without; anything but "none"
//    without tools is a 400, as OpenAI answers.
// Errors are InvalidArgument with the param payload.
absl::StatusOr<ToolsRequest> ToolsFromBody(absl::string_view body);

// The system-prompt text that describes `tools` and the call format to the model (templates
// that take no "tools" variable, as DeepSeek's do not).
std::string ToolsSystemPrompt(const std::vector<ToolDefinition>& tools);

// Whether the model's tokenizer has the tool-call markers as tokens.
bool ModelSupportsToolCalls(const ModelContext& model);

// The forced-call grammar for tool_choice "required" (any of the tools) or a named function:
// markup encoded with the model's tokenizer, each function's parameters as its arguments schema
// (compiled here, so what constrained decoding cannot enforce is a 400 naming the tool).
absl::StatusOr<ToolCallGrammarIds> ForcedToolCallGrammar(const ToolsRequest& request,
                                                         const ModelContext& model);

// One piece of a tool call in an answer: the first piece of each call carries id and name.
struct ToolCallDelta {
  int index = 0;
  std::string id;
  std::string name;
  std::string arguments;
};

// Splits streamed answer text into plain content and tool calls (DeepSeek's markup above).
// Arguments stream as they come, minus what may still turn out to be the closing fence or
// marker; a call's arguments are the text between "```json\n" and "\n```" (whitespace around
// trimmed). Text after the calls is content. Not thread-safe.
class ToolCallParser {
 public:
  ToolCallParser();

  struct Output {
    std::string content;
    std::vector<ToolCallDelta> calls;
  };
  Output Add(absl::string_view text);
  // End of the answer: what was held back (a call cut short keeps its partial arguments).
  Output Flush();
  int calls() const { return next_index_; }

 private:
  enum class State { kText, kBetween, kHeader, kArguments, kAfter };
  void Run(Output* out, bool flush);
  std::string NewId();

  State state_ = State::kText;
  std::string buffer_;
  int next_index_ = 0;
  bool arguments_started_ = false;  // the current call's arguments have begun
  std::mt19937_64 rng_;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_TOOL_CALLS_H_
