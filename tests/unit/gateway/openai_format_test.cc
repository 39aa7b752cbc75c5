#include "gateway/openai_format.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace moeserve::gateway {
namespace {

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
  Json j = CompletionResponseJson(ChatMeta(), {"why", "42"}, FinishReason::kStop, SomeUsage());
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
  Json j = CompletionResponseJson(m, {"", "text"}, FinishReason::kLength, SomeUsage());
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "text");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  Json c = DeltaChunkJson(m, {"", "more"});
  EXPECT_EQ(c["choices"][0]["text"], "more");
}

TEST(OpenAiFormatTest, DeltaChunksSplitReasoningAndContent) {
  Json r = DeltaChunkJson(ChatMeta(), {"hmm", ""});
  EXPECT_EQ(r["object"], "chat.completion.chunk");
  EXPECT_EQ(r["choices"][0]["delta"]["reasoning_content"], "hmm");
  EXPECT_FALSE(r["choices"][0]["delta"].contains("content"));
  EXPECT_TRUE(r["choices"][0]["finish_reason"].is_null());
  Json c = DeltaChunkJson(ChatMeta(), {"", "ok"});
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
  EXPECT_FALSE(DeltaChunkJson(ChatMeta(false), {"", "x"}).contains("usage"));
}

TEST(OpenAiFormatTest, SseFraming) {
  EXPECT_EQ(SseEvent(Json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(SseDone(), "data: [DONE]\n\n");
  // One event is one line: newlines in text are escaped.
  std::string e = SseEvent(DeltaChunkJson(ChatMeta(), {"", "two\nlines"}));
  EXPECT_EQ(e.find('\n'), e.size() - 2);
  EXPECT_TRUE(absl::StartsWith(e, "data: {"));
}

TEST(OpenAiFormatTest, ModelsList) {
  Json j = ModelsJson("tiny-r1", 5, 16384);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "tiny-r1");
  EXPECT_EQ(j["data"][0]["object"], "model");
}

}  // namespace
}  // namespace moeserve::gateway
