#include "gateway/output_assembler.h"

#include <algorithm>
#include <utility>

namespace moeserve::gateway {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

std::string StopStringMatcher::Add(absl::string_view text) {
  if (stopped_) return "";
  pending_.append(text.data(), text.size());
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
      if (absl::string_view(pending_).substr(pending_.size() - len) ==
          absl::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::Flush() {
  std::string out;
  out.swap(pending_);
  return stopped_ ? std::string() : out;
}

void TextDelta::Append(TextDelta other) {
  reasoning += other.reasoning;
  content += other.content;
  for (ToolCallDelta& c : other.tool_calls) {
    auto same = std::find_if(tool_calls.begin(), tool_calls.end(),
                             [&](const ToolCallDelta& t) { return t.index == c.index; });
    if (same == tool_calls.end()) {
      tool_calls.push_back(std::move(c));
    } else {
      same->arguments += c.arguments;
    }
  }
  for (LogprobEntry& e : other.reasoning_logprobs) reasoning_logprobs.push_back(std::move(e));
  for (LogprobEntry& e : other.content_logprobs) content_logprobs.push_back(std::move(e));
}

namespace {

int64_t CodePoints(absl::string_view utf8) {
  int64_t n = 0;
  for (char c : utf8) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

}  // namespace

OutputAssembler::OutputAssembler(const engine::Tokenizer& tokenizer, bool split_reasoning,
                                 bool starts_in_reasoning, std::vector<std::string> stop,
                                 int32_t prompt_tokens, bool parse_tool_calls)
    : tokenizer_(tokenizer),
      decoder_(tokenizer, engine::DecodeOptions{.skip_special_tokens = true}),
      split_reasoning_(split_reasoning),
      splitter_(starts_in_reasoning),
      stop_(std::move(stop)) {
  usage_.prompt_tokens = prompt_tokens;
  if (parse_tool_calls) tools_.emplace();
}

void OutputAssembler::Answer(std::string text, bool flush, TextDelta* out) {
  if (tools_) {
    ToolCallParser::Output parsed = tools_->Add(text);
    if (flush) {
      ToolCallParser::Output rest = tools_->Flush();
      parsed.content += rest.content;
      for (ToolCallDelta& c : rest.calls) parsed.calls.push_back(std::move(c));
    }
    text = std::move(parsed.content);
    TextDelta calls;
    calls.tool_calls = std::move(parsed.calls);
    out->Append(std::move(calls));
  }
  out->content += stop_.Add(text);
  if (flush) out->content += stop_.Flush();
  if (stop_.stopped() && finish_reason_ == FinishReason::kNone) SetFinish(FinishReason::kStop);
}

void OutputAssembler::SetFinish(FinishReason reason) {
  if (reason == FinishReason::kStop && tools_ && tools_->calls() > 0) {
    reason = FinishReason::kToolCalls;
  }
  finish_reason_ = reason;
}

TextDelta OutputAssembler::Route(const std::string& text) {
  TextDelta out;
  std::string content;
  if (split_reasoning_) {
    engine::ReasoningSplitter::Delta d = splitter_.Add(text);
    out.reasoning = std::move(d.reasoning);
    content = std::move(d.content);
  } else {
    content = text;
  }
  Answer(std::move(content), false, &out);
  return out;
}

TextDelta OutputAssembler::Flush() {
  TextDelta out = Route(decoder_.Flush());
  if (split_reasoning_) {
    engine::ReasoningSplitter::Delta d = splitter_.Flush();
    out.reasoning += d.reasoning;
    Answer(std::move(d.content), false, &out);
  }
  Answer("", true, &out);
  return out;
}

void OutputAssembler::Echo(std::string text, std::vector<int32_t> prompt_ids, bool score_only) {
  echo_text_ = std::move(text);
  echo_ids_ = std::move(prompt_ids);
  score_only_ = score_only;
}

TextDelta OutputAssembler::EchoDelta(const GenerationChunk& chunk) {
  TextDelta out;
  if (!echo_text_) return out;
  if (!echo_ids_.empty() && chunk.prompt_logprobs.size() + 1 == echo_ids_.size()) {
    // Offsets as the completion's: code points decoded before each token.
    engine::StreamDecoder decoder(tokenizer_, engine::DecodeOptions{.skip_special_tokens = true});
    for (size_t i = 0; i < echo_ids_.size(); ++i) {
      engine::SampleResult r;
      if (i > 0) r = chunk.prompt_logprobs[i - 1];
      r.token = echo_ids_[i];
      LogprobEntry e = Entry(r);
      e.scored = i > 0;
      out.content_logprobs.push_back(std::move(e));
      absl::StatusOr<std::string> text = decoder.Add(echo_ids_[i]);
      if (text.ok()) decoded_chars_ += CodePoints(*text);
    }
  }
  decoded_chars_ = CodePoints(*echo_text_);
  out.content = std::move(*echo_text_);
  echo_text_.reset();
  return out;
}

TextDelta OutputAssembler::OnChunk(const GenerationChunk& chunk) {
  TextDelta out;
  if (first_chunk_) {
    usage_.cached_tokens = std::clamp(chunk.cached_prompt_tokens, 0, usage_.prompt_tokens);
    first_chunk_ = false;
    out = EchoDelta(chunk);
  }
  if (finished()) return out;
  if (score_only_) {
    if (chunk.finish_reason != FinishReason::kNone) SetFinish(FinishReason::kLength);
    return out;
  }
  const bool with_logprobs =
      !chunk.logprobs.empty() && chunk.logprobs.size() == chunk.token_ids.size();
  for (size_t i = 0; i < chunk.token_ids.size(); ++i) {
    const int32_t id = chunk.token_ids[i];
    ++usage_.completion_tokens;
    const bool reasoning = split_reasoning_ && splitter_.in_reasoning();
    if (reasoning) ++usage_.reasoning_tokens;
    if (with_logprobs) {
      (reasoning ? out.reasoning_logprobs : out.content_logprobs)
          .push_back(Entry(chunk.logprobs[i]));
    }
    absl::StatusOr<std::string> text = decoder_.Add(id);
    // An id the tokenizer cannot decode (a padding row) shows as nothing.
    if (!text.ok()) continue;
    decoded_chars_ += CodePoints(*text);
    out.Append(Route(*text));
    if (finished()) return out;  // stop string
  }
  if (chunk.finish_reason != FinishReason::kNone) {
    if (report_stop_token_ && chunk.stop_logprob) {
      out.content_logprobs.push_back(Entry(*chunk.stop_logprob));
    }
    out.Append(Flush());
    if (finish_reason_ == FinishReason::kNone) SetFinish(chunk.finish_reason);
  }
  return out;
}

LogprobEntry OutputAssembler::Entry(const engine::SampleResult& r) const {
  LogprobEntry e;
  e.bytes = std::string(tokenizer_.TokenBytes(r.token).value_or(""));
  e.logprob = r.logprob;
  e.text_offset = decoded_chars_;
  for (const engine::TokenLogprob& t : r.top_logprobs) {
    e.top.emplace_back(std::string(tokenizer_.TokenBytes(t.token).value_or("")), t.logprob);
  }
  return e;
}

TextDelta OutputAssembler::Finish(FinishReason reason) {
  if (finished()) return {};
  TextDelta out;
  if (first_chunk_) {  // the backend ended before any chunk: the echo still opens the text
    first_chunk_ = false;
    out = EchoDelta(GenerationChunk());
  }
  out.Append(Flush());
  if (finish_reason_ == FinishReason::kNone) SetFinish(reason);
  return out;
}

}  // namespace moeserve::gateway
