#include "gateway/tool_calls.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/http_status.h"
#include "common/status_macros.h"
#include "engine/grammar/json_schema.h"

namespace moeserve::gateway {
namespace {

using Json = nlohmann::ordered_json;

constexpr size_t kMaxTools = 128;

absl::Status Invalid(absl::string_view param, absl::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(message), param);
}

const Json* Field(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

absl::StatusOr<ToolDefinition> ParseTool(const Json& t, size_t i) {
  const std::string param = absl::StrCat("tools[", i, "]");
  if (!t.is_object()) return Invalid(param, absl::StrCat("'", param, "' must be an object"));
  const Json* type = Field(t, "type");
  if (type == nullptr || *type != "function") {
    return Invalid(param + ".type", absl::StrCat("'", param, ".type' must be 'function'"));
  }
  const Json* f = Field(t, "function");
  if (f == nullptr || !f->is_object()) {
    return Invalid(param + ".function", absl::StrCat("'", param, ".function' must be an object"));
  }
  ToolDefinition d;
  const Json* name = Field(*f, "name");
  if (name == nullptr || !name->is_string() || !ValidName(name->get<std::string>())) {
    return Invalid(param + ".function.name",
                   absl::StrCat("'", param,
                                ".function.name' must be a string of 1 to 64 letters, digits, "
                                "'_' or '-'"));
  }
  d.name = name->get<std::string>();
  if (const Json* desc = Field(*f, "description")) {
    if (!desc->is_string()) {
      return Invalid(param + ".function.description",
                     absl::StrCat("'", param, ".function.description' must be a string"));
    }
    d.description = desc->get<std::string>();
  }
  if (const Json* strict = Field(*f, "strict"); strict != nullptr && !strict->is_boolean()) {
    return Invalid(param + ".function.strict",
                   absl::StrCat("'", param, ".function.strict' must be a boolean"));
  }
  if (const Json* params = Field(*f, "parameters")) {
    if (!params->is_object()) {
      return Invalid(param + ".function.parameters",
                     absl::StrCat("'", param, ".function.parameters' must be a JSON Schema object"));
    }
    d.parameters = *params;
  }
  return d;
}

// The JSON Schema a call's arguments must match: the declared parameters, or (none declared) an
// empty object, as OpenAI reads a function without parameters.
std::string ArgumentsSchema(const ToolDefinition& tool) {
  if (tool.parameters.is_null()) {
    return R"({"type":"object","properties":{},"additionalProperties":false})";
  }
  return tool.parameters.dump();
}

}  // namespace

absl::StatusOr<ToolsRequest> ToolsFromBody(absl::string_view body) {
  ToolsRequest r;
  Json j = Json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return r;  // the main parser reports it
  if (const Json* tools = Field(j, "tools")) {
    if (!tools->is_array()) return Invalid("tools", "'tools' must be an array");
    if (tools->size() > kMaxTools) {
      return Invalid("tools", absl::StrCat("'tools' may hold at most ", kMaxTools, " functions"));
    }
    for (size_t i = 0; i < tools->size(); ++i) {
      MOESERVE_ASSIGN_OR_RETURN(ToolDefinition d, ParseTool((*tools)[i], i));
      for (const ToolDefinition& other : r.tools) {
        if (other.name == d.name) {
          return Invalid(absl::StrCat("tools[", i, "].function.name"),
                         absl::StrCat("the function name '", d.name, "' is defined twice"));
        }
      }
      r.tools.push_back(std::move(d));
    }
  }
  r.choice = r.tools.empty() ? ToolChoice::kNone : ToolChoice::kAuto;
  if (const Json* choice = Field(j, "tool_choice")) {
    if (choice->is_string()) {
      const std::string c = choice->get<std::string>();
      if (c == "none") {
        r.choice = ToolChoice::kNone;
      } else if (c == "auto") {
        r.choice = ToolChoice::kAuto;
      } else if (c == "required") {
        r.choice = ToolChoice::kRequired;
      } else {
        return Invalid("tool_choice", absl::StrCat("invalid 'tool_choice' '", c,
                                                   "' (none, auto, required or a function)"));
      }
    } else if (choice->is_object()) {
      const Json* type = Field(*choice, "type");
      const Json* f = Field(*choice, "function");
      const Json* name = f != nullptr && f->is_object() ? Field(*f, "name") : nullptr;
      if (type == nullptr || *type != "function" || name == nullptr || !name->is_string()) {
        return Invalid("tool_choice",
                       "'tool_choice' must be none, auto, required or {\"type\": \"function\", "
                       "\"function\": {\"name\": ...}}");
      }
      r.choice = ToolChoice::kNamed;
      r.choice_name = name->get<std::string>();
      if (std::none_of(r.tools.begin(), r.tools.end(),
                       [&](const ToolDefinition& t) { return t.name == r.choice_name; })) {
        return Invalid("tool_choice", absl::StrCat("'tool_choice' names the function '",
                                                   r.choice_name, "', which 'tools' lacks"));
      }
    } else {
      return Invalid("tool_choice", "'tool_choice' must be a string or an object");
    }
    if (r.tools.empty() && r.choice != ToolChoice::kNone) {
      return Invalid("tool_choice", "'tool_choice' is only allowed when 'tools' are given");
    }
  }
  if (const Json* parallel = Field(j, "parallel_tool_calls")) {
    if (!parallel->is_boolean()) {
      return Invalid("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
    }
    r.parallel = parallel->get<bool>();
  }
  return r;
}

std::string ToolsSystemPrompt(const std::vector<ToolDefinition>& tools) {
  std::string out =
      "## Tools\n\nYou can call the functions below. To call functions, answer with the calls "
      "only, in exactly this form (one <｜tool▁call▁begin｜>...<｜tool▁call▁end｜> per call, "
      "the arguments a JSON object matching the function's parameters):\n"
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>FUNCTION_NAME\n```json\n"
      "ARGUMENTS\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n"
      "The results come back in the next message; then answer the user.\n\n### Functions\n";
  for (const ToolDefinition& t : tools) {
    absl::StrAppend(&out, "\n- ", t.name);
    if (!t.description.empty()) absl::StrAppend(&out, ": ", t.description);
    absl::StrAppend(&out, "\n  Parameters (JSON Schema): ",
                    t.parameters.is_null() ? std::string("none") : t.parameters.dump(), "\n");
  }
  return out;
}

bool ModelSupportsToolCalls(const ModelContext& model) {
  for (absl::string_view marker :
       {kToolCallsBegin, kToolCallsEnd, kToolCallBegin, kToolCallEnd, kToolSep}) {
    if (!model.tokenizer->TokenToId(marker).has_value()) return false;
  }
  return true;
}

absl::StatusOr<ToolCallGrammarIds> ForcedToolCallGrammar(const ToolsRequest& request,
                                                         const ModelContext& model) {
  if (!ModelSupportsToolCalls(model)) {
    return Invalid("tool_choice", "this model's tokenizer has no tool-call tokens");
  }
  engine::EncodeOptions opts;
  opts.add_special_tokens = false;  // the markers are added tokens, matched in the text
  auto encode = [&](const std::string& text) { return model.tokenizer->Encode(text, opts); };
  ToolCallGrammarIds g;
  g.parallel = request.parallel && request.choice == ToolChoice::kRequired;
  MOESERVE_ASSIGN_OR_RETURN(g.open, encode(std::string(kToolCallsBegin)));
  MOESERVE_ASSIGN_OR_RETURN(g.tail, encode(absl::StrCat("\n```", kToolCallEnd)));
  MOESERVE_ASSIGN_OR_RETURN(g.separator, encode("\n"));
  MOESERVE_ASSIGN_OR_RETURN(g.close, encode(std::string(kToolCallsEnd)));
  for (size_t i = 0; i < request.tools.size(); ++i) {
    const ToolDefinition& t = request.tools[i];
    if (request.choice == ToolChoice::kNamed && t.name != request.choice_name) continue;
    ToolCallGrammarIds::Option& o = g.options.emplace_back();
    MOESERVE_ASSIGN_OR_RETURN(
        o.head, encode(absl::StrCat(kToolCallBegin, "function", kToolSep, t.name, "\n```json\n")));
    o.arguments = ArgumentsSchema(t);
    if (absl::Status s = engine::grammar::CompileJsonSchema(o.arguments).status();
        !s.ok()) {
      return Invalid(absl::StrCat("tools[", i, "].function.parameters"),
                     absl::StrCat("the parameters of '", t.name,
                                  "' cannot be enforced for a forced call: ", s.message()));
    }
  }
  return g;
}

ToolCallParser::ToolCallParser() : rng_(std::random_device()()) {}

std::string ToolCallParser::NewId() {
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng_() % (sizeof(kAlphabet) - 1)];
  return id;
}

namespace {

// The length of the longest suffix of `text` that is a proper prefix of `marker`.
size_t PartialSuffix(absl::string_view text, absl::string_view marker) {
  for (size_t len = std::min(text.size(), marker.size() - 1); len > 0; --len) {
    if (text.substr(text.size() - len) == marker.substr(0, len)) return len;
  }
  return 0;
}

size_t Find(const std::string& text, absl::string_view what, size_t from = 0) {
  return absl::string_view(text).find(what, from);
}

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// How much of the end of streamed arguments to hold back: what may still be the closing fence
// ("\n```", with any whitespace) or the start of the end marker.
size_t ArgumentsHold(absl::string_view text) {
  size_t hold = PartialSuffix(text, kToolCallEnd);
  while (hold < text.size() &&
         (IsSpace(text[text.size() - hold - 1]) || text[text.size() - hold - 1] == '`')) {
    ++hold;
  }
  return hold;
}

}  // namespace

void ToolCallParser::Run(Output* out, bool flush) {
  while (true) {
    switch (state_) {
      case State::kText: {
        const size_t at = Find(buffer_, kToolCallsBegin);
        if (at != std::string::npos) {
          out->content += buffer_.substr(0, at);
          buffer_.erase(0, at + kToolCallsBegin.size());
          state_ = State::kBetween;
          continue;
        }
        const size_t hold = flush ? 0 : PartialSuffix(buffer_, kToolCallsBegin);
        out->content += buffer_.substr(0, buffer_.size() - hold);
        buffer_.erase(0, buffer_.size() - hold);
        return;
      }
      case State::kBetween: {
        size_t skip = 0;
        while (skip < buffer_.size() && IsSpace(buffer_[skip])) ++skip;
        buffer_.erase(0, skip);
        if (absl::StartsWith(buffer_, kToolCallBegin)) {
          buffer_.erase(0, kToolCallBegin.size());
          state_ = State::kHeader;
          continue;
        }
        if (absl::StartsWith(buffer_, kToolCallsEnd)) {
          buffer_.erase(0, kToolCallsEnd.size());
          state_ = State::kAfter;
          continue;
        }
        const bool maybe = absl::StartsWith(kToolCallBegin, buffer_) ||
                           absl::StartsWith(kToolCallsEnd, buffer_);
        if (maybe && !flush) return;  // (also when empty)
        state_ = State::kAfter;  // not markup: whatever follows is plain text
        continue;
      }
      case State::kHeader: {
        // "function<｜tool▁sep｜>NAME\n", then an optional "```json\n" (or "```\n") line.
        const size_t sep = Find(buffer_, kToolSep);
        const size_t nl = sep == std::string::npos ? std::string::npos
                                                   : buffer_.find('\n', sep + kToolSep.size());
        if (nl == std::string::npos) {
          if (flush) buffer_.clear();  // a call cut short before its name: nothing to report
          return;
        }
        std::string rest = buffer_.substr(nl + 1);
        if (absl::StartsWith(rest, "```")) {
          const size_t fence_end = rest.find('\n');
          if (fence_end == std::string::npos) {
            if (!flush) return;
            rest.clear();
          } else {
            rest.erase(0, fence_end + 1);
          }
        } else if (!flush && absl::StartsWith("```json\n", rest)) {
          return;  // may still become the fence
        }
        ToolCallDelta& d = out->calls.emplace_back();
        d.index = next_index_++;
        d.id = NewId();
        d.name = std::string(absl::StripAsciiWhitespace(
            buffer_.substr(sep + kToolSep.size(), nl - sep - kToolSep.size())));
        buffer_ = std::move(rest);
        arguments_started_ = false;
        state_ = State::kArguments;
        continue;
      }
      case State::kArguments: {
        if (!arguments_started_) {
          // Whitespace before the arguments is not part of them.
          const size_t first = buffer_.find_first_not_of(" \t\r\n");
          buffer_.erase(0, first == std::string::npos ? buffer_.size() : first);
          if (buffer_.empty() && !flush) return;
          arguments_started_ = true;
        }
        const size_t end = Find(buffer_, kToolCallEnd);
        absl::string_view args = buffer_;
        if (end != std::string::npos) args = args.substr(0, end);
        size_t keep = args.size();
        if (end != std::string::npos) {
          // The whole rest of the arguments: drop the closing fence and whitespace around it.
          absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(args);
          trimmed = absl::StripTrailingAsciiWhitespace(absl::StripSuffix(trimmed, "```"));
          keep = trimmed.size();
        } else if (!flush) {
          keep -= ArgumentsHold(args);
        }
        if (keep > 0) {
          if (out->calls.empty() || out->calls.back().index != next_index_ - 1) {
            ToolCallDelta& more = out->calls.emplace_back();
            more.index = next_index_ - 1;
          }
          out->calls.back().arguments += std::string(args.substr(0, keep));
        }
        if (end == std::string::npos) {
          buffer_.erase(0, flush ? buffer_.size() : keep);
          return;
        }
        buffer_.erase(0, end + kToolCallEnd.size());
        state_ = State::kBetween;
        continue;
      }
      case State::kAfter:
        out->content += buffer_;
        buffer_.clear();
        return;
    }
  }
}

ToolCallParser::Output ToolCallParser::Add(absl::string_view text) {
  buffer_.append(text.data(), text.size());
  Output out;
  Run(&out, false);
  return out;
}

ToolCallParser::Output ToolCallParser::Flush() {
  Output out;
  Run(&out, true);
  return out;
}

}  // namespace moeserve::gateway
