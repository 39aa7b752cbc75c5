#ifndef MOESERVE_GATEWAY_OUTPUT_ASSEMBLER_H_
#define MOESERVE_GATEWAY_OUTPUT_ASSEMBLER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/reasoning.h"
#include "engine/tokenizer.h"
#include "gateway/generation_backend.h"
#include "gateway/tool_calls.h"

namespace moeserve::gateway {

// Finds stop strings in streamed text, across chunk boundaries. Add() returns the text that can
// no longer be part of a stop string; a suffix that may still grow into one is held back. When a
// stop string completes, the text before it is returned, stopped() becomes true and everything
// after is dropped. Not thread-safe.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  std::string Add(absl::string_view text);
  // End of stream: the held-back text (empty once stopped).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

// The log-probability of one generated token, ready to format: `bytes` are the token's raw bytes
// (possibly part of a UTF-8 character), `top` its alternatives as (bytes, logprob), most likely
// first. `text_offset` counts the characters (code points) of completion text decoded before
// this token (the legacy completions API reports it).
struct LogprobEntry {
  std::string bytes;
  float logprob = 0.0f;
  bool scored = true;  // false: the prompt's first token (echo), which nothing predicts (null)
  std::vector<std::pair<std::string, float>> top;
  int64_t text_offset = 0;
};

struct TextDelta {
  std::string reasoning;
  std::string content;
  // Tool calls in the answer (chat with tools). In a stream, each call's first piece has its
  // id and name; Append merges pieces of one call, so an accumulated delta holds whole calls.
  std::vector<ToolCallDelta> tool_calls;
  // Logprobs of the tokens behind this delta (when asked for), by the section each token was
  // generated in: reasoning (the tokens counted as reasoning_tokens) or the answer.
  std::vector<LogprobEntry> reasoning_logprobs;
  std::vector<LogprobEntry> content_logprobs;
  bool empty() const {
    return reasoning.empty() && content.empty() && tool_calls.empty() &&
           reasoning_logprobs.empty() && content_logprobs.empty();
  }
  // Appends `other` (text and logprobs).
  void Append(TextDelta other);
};

struct UsageInfo {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t reasoning_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens served from the KV cache
};

// Turns a request's token stream into text: incremental detokenization (special tokens such as
// EOS are not shown), the reasoning split (chat), stop strings on the content, usage counts,
// logprobs and the finish reason. Pure (no I/O), one per request (one per choice when n > 1),
// not thread-safe.
//
// Logprobs cover exactly the tokens counted in usage.completion_tokens: every token up to and
// including the one that completed a stop string (whose text is cut); with ReportStopToken()
// (completions) also the EOS or stop token id the worker hides, as the last entry. A chunk whose
// logprobs do not match its tokens one to one contributes no entries.
class OutputAssembler {
 public:
  // `parse_tool_calls`: DeepSeek tool-call markup in the answer becomes tool_calls, and a
  // natural end after calls finishes with FinishReason::kToolCalls.
  OutputAssembler(const engine::Tokenizer& tokenizer, bool split_reasoning,
                  bool starts_in_reasoning, std::vector<std::string> stop, int32_t prompt_tokens,
                  bool parse_tool_calls = false);

  // Completions' echo, before the first chunk: the first delta starts with `text` (the prompt
  // as the client sent it, outside stop strings) and, when the first chunk carries one
  // prompt_logprobs entry per prompt token after the first, content_logprobs starts with an
  // entry per prompt id (the first unscored). Completion text offsets then count from the end
  // of `text`. `score_only` (max_tokens 0): generated tokens are dropped and the request ends
  // with "length" when the backend finishes.
  void Echo(std::string text, std::vector<int32_t> prompt_ids, bool score_only);
  // Completions: a chunk's stop_logprob (the hidden EOS or stop token id that ended the
  // generation) becomes the last logprob entry, as OpenAI's legacy completions and vLLM show
  // it; usage does not count it. Chat leaves it out, as OpenAI's chat does.
  void ReportStopToken() { report_stop_token_ = true; }

  // Feeds a chunk; returns the text decided so far. Once finished() (the chunk carried a
  // finish reason, or a stop string matched) later chunks are ignored. A stop-string match
  // means the caller should Cancel() the backend.
  TextDelta OnChunk(const GenerationChunk& chunk);
  // The backend ended without a finish reason (error or cancellation): flushes the held text.
  TextDelta Finish(FinishReason reason);

  bool finished() const { return finish_reason_ != FinishReason::kNone; }
  bool stopped_by_string() const { return stop_.stopped(); }
  FinishReason finish_reason() const { return finish_reason_; }
  const UsageInfo& usage() const { return usage_; }

 private:
  TextDelta Route(const std::string& text);
  // The answer text through the tool-call parser (when on) and the stop strings.
  void Answer(std::string text, bool flush, TextDelta* out);
  TextDelta Flush();
  void SetFinish(FinishReason reason);
  LogprobEntry Entry(const engine::SampleResult& r) const;
  // The echoed prompt and its logprob entries (first chunk).
  TextDelta EchoDelta(const GenerationChunk& chunk);

  const engine::Tokenizer& tokenizer_;
  engine::StreamDecoder decoder_;
  int64_t decoded_chars_ = 0;  // code points the decoder has produced
  bool split_reasoning_;
  engine::ReasoningSplitter splitter_;
  StopStringMatcher stop_;
  std::optional<ToolCallParser> tools_;
  UsageInfo usage_;
  bool first_chunk_ = true;
  std::optional<std::string> echo_text_;
  std::vector<int32_t> echo_ids_;
  bool score_only_ = false;
  bool report_stop_token_ = false;
  FinishReason finish_reason_ = FinishReason::kNone;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_OUTPUT_ASSEMBLER_H_
