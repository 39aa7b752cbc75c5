#include "gateway/openai_format.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace moeserve::gateway {
namespace {

TextDelta Text(std::string reasoning, std::string content) {
  TextDelta d;
  d.reasoning = std::move(reasoning);
  d.content = std::move(content);
  return d;
}

using Json = nlohmann::json;

ResponseMeta ChatMeta(bool include_usage = false) {
  ResponseMeta m;
  m.id = "chatcmpl-1";
  m.created = 1700000000;
  m.model = "tiny-r1";
  m.endpoint = Endpoint::kChat;
  m.split_reasoning = true;
  m.include_usage = include_usage;
  return m;
}

UsageInfo SomeUsage() {
  UsageInfo u;
  u.prompt_tokens = 10;
  u.completion_tokens = 7;
  u.reasoning_tokens = 3;
  u.cached_tokens = 4;
  return u;
}

TEST(OpenAiFormatTest, UsageHasDeepSeekAndOpenAiFields) {
  Json u = UsageJson(SomeUsage());
  EXPECT_EQ(u["prompt_tokens"], 10);
  EXPECT_EQ(u["completion_tokens"], 7);
  EXPECT_EQ(u["total_tokens"], 17);
  EXPECT_EQ(u["prompt_cache_hit_tokens"], 4);
  EXPECT_EQ(u["prompt_cache_miss_tokens"], 6);
  EXPECT_EQ(u["prompt_tokens_details"]["cached_tokens"], 4);
  EXPECT_EQ(u["completion_tokens_details"]["reasoning_tokens"], 3);
}

TEST(OpenAiFormatTest, ChatCompletionCarriesReasoningContent) {
  Json j = CompletionResponseJson(ChatMeta(), Text("why", "42"), FinishReason::kStop, SomeUsage());
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"], "chatcmpl-1");
  const Json& msg = j["choices"][0]["message"];
  EXPECT_EQ(msg["role"], "assistant");
  EXPECT_EQ(msg["content"], "42");
  EXPECT_EQ(msg["reasoning_content"], "why");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 17);
}

TEST(OpenAiFormatTest, TextCompletionShape) {
  ResponseMeta m = ChatMeta();
  m.endpoint = Endpoint::kCompletion;
  m.split_reasoning = false;
  Json j = CompletionResponseJson(m, Text("", "text"), FinishReason::kLength, SomeUsage());
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "text");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  Json c = DeltaChunkJson(m, Text("", "more"));
  EXPECT_EQ(c["choices"][0]["text"], "more");
}

TEST(OpenAiFormatTest, DeltaChunksSplitReasoningAndContent) {
  Json r = DeltaChunkJson(ChatMeta(), Text("hmm", ""));
  EXPECT_EQ(r["object"], "chat.completion.chunk");
  EXPECT_EQ(r["choices"][0]["delta"]["reasoning_content"], "hmm");
  EXPECT_FALSE(r["choices"][0]["delta"].contains("content"));
  EXPECT_TRUE(r["choices"][0]["finish_reason"].is_null());
  Json c = DeltaChunkJson(ChatMeta(), Text("", "ok"));
  EXPECT_EQ(c["choices"][0]["delta"]["content"], "ok");
  EXPECT_FALSE(c["choices"][0]["delta"].contains("reasoning_content"));
  Json role = RoleChunkJson(ChatMeta());
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
}

TEST(OpenAiFormatTest, FinishAndUsageChunks) {
  Json f = FinishChunkJson(ChatMeta(true), FinishReason::kLength);
  EXPECT_EQ(f["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(f["choices"][0]["delta"].empty());
  EXPECT_TRUE(f.contains("usage"));
  EXPECT_TRUE(f["usage"].is_null());
  Json u = UsageChunkJson(ChatMeta(true), SomeUsage());
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["completion_tokens"], 7);
  // Without include_usage chunks have no usage member.
  EXPECT_FALSE(DeltaChunkJson(ChatMeta(false), Text("", "x")).contains("usage"));
}

TEST(OpenAiFormatTest, SseFraming) {
  EXPECT_EQ(SseEvent(Json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(SseDone(), "data: [DONE]\n\n");
  // One event is one line: newlines in text are escaped.
  std::string e = SseEvent(DeltaChunkJson(ChatMeta(), Text("", "two\nlines")));
  EXPECT_EQ(e.find('\n'), e.size() - 2);
  EXPECT_TRUE(absl::StartsWith(e, "data: {"));
}

LogprobEntry Entry(std::string bytes, float logprob, int64_t offset,
                   std::vector<std::pair<std::string, float>> top = {}) {
  LogprobEntry e;
  e.bytes = std::move(bytes);
  e.logprob = logprob;
  e.text_offset = offset;
  e.top = std::move(top);
  return e;
}

TEST(OpenAiFormatTest, ChatLogprobsInOpenAiShape) {
  ResponseMeta m = ChatMeta();
  TextDelta d = Text("r", "Hi\xe4");
  d.reasoning_logprobs.push_back(Entry("r", -0.5f, 0));
  d.content_logprobs.push_back(Entry("Hi", -0.25f, 1, {{"Hi", -0.25f}, {"\xe4", -2.0f}}));
  d.content_logprobs.push_back(Entry("\xe4", -1.0f, 3));
  // Not asked for: null.
  EXPECT_TRUE(
      CompletionResponseJson(m, d, FinishReason::kStop, SomeUsage())["choices"][0]["logprobs"]
          .is_null());
  m.logprobs = true;
  Json lp =
      CompletionResponseJson(m, d, FinishReason::kStop, SomeUsage())["choices"][0]["logprobs"];
  ASSERT_EQ(lp["content"].size(), 2u);
  EXPECT_TRUE(lp["refusal"].is_null());
  const Json& first = lp["content"][0];
  EXPECT_EQ(first["token"], "Hi");
  EXPECT_FLOAT_EQ(first["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(first["bytes"], Json::array({72, 105}));
  ASSERT_EQ(first["top_logprobs"].size(), 2u);
  EXPECT_EQ(first["top_logprobs"][1]["token"], "bytes:\\xe4");
  EXPECT_EQ(first["top_logprobs"][1]["bytes"], Json::array({228}));
  EXPECT_FLOAT_EQ(first["top_logprobs"][1]["logprob"].get<float>(), -2.0f);
  EXPECT_EQ(lp["content"][1]["token"], "bytes:\\xe4");
  EXPECT_TRUE(lp["content"][1]["top_logprobs"].empty());
  ASSERT_EQ(lp["reasoning_content"].size(), 1u);
  EXPECT_EQ(lp["reasoning_content"][0]["token"], "r");
  // Streamed: the same member on the delta's choice, with its index.
  Json chunk = DeltaChunkJson(m, d, 3);
  EXPECT_EQ(chunk["choices"][0]["index"], 3);
  EXPECT_EQ(chunk["choices"][0]["logprobs"], lp);
}

TEST(OpenAiFormatTest, CompletionLogprobsInLegacyShape) {
  ResponseMeta m = ChatMeta();
  m.endpoint = Endpoint::kCompletion;
  m.split_reasoning = false;
  m.logprobs = true;
  TextDelta d = Text("", "a b");
  d.content_logprobs.push_back(Entry("a", -0.1f, 0, {{"a", -0.1f}, {"c", -3.0f}}));
  d.content_logprobs.push_back(Entry(" b", -0.2f, 1, {{" b", -0.2f}, {" d", -2.5f}}));
  Json lp = DeltaChunkJson(m, d)["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], Json::array({"a", " b"}));
  ASSERT_EQ(lp["token_logprobs"].size(), 2u);
  EXPECT_FLOAT_EQ(lp["token_logprobs"][1].get<float>(), -0.2f);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0]["c"].get<float>(), -3.0f);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][1][" d"].get<float>(), -2.5f);
  EXPECT_EQ(lp["text_offset"], Json::array({0, 1}));

  // An echoed prompt's first token: null logprob and alternatives, as OpenAI returns them.
  d.content_logprobs.front().scored = false;
  lp = DeltaChunkJson(m, d)["choices"][0]["logprobs"];
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(lp["tokens"], Json::array({"a", " b"}));
  EXPECT_FLOAT_EQ(lp["token_logprobs"][1].get<float>(), -0.2f);
}

TEST(OpenAiFormatTest, SeveralChoicesInIndexOrder) {
  ResponseMeta m = ChatMeta();
  Json j = CompletionResponseJson(m,
                                  {ChoiceResult{Text("", "one"), FinishReason::kStop},
                                   ChoiceResult{Text("", "two"), FinishReason::kLength}},
                                  SomeUsage());
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["choices"][1]["message"]["content"], "two");
  EXPECT_EQ(j["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(FinishChunkJson(m, FinishReason::kStop, 1)["choices"][0]["index"], 1);
  EXPECT_EQ(RoleChunkJson(m, 1)["choices"][0]["index"], 1);
}

TEST(OpenAiFormatTest, ModelsList) {
  Json j = ModelsJson("tiny-r1", 5, 16384);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "tiny-r1");
  EXPECT_EQ(j["data"][0]["object"], "model");
}

}  // namespace
}  // namespace moeserve::gateway
