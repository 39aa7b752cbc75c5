#include "gateway/request_mapping.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "gtest/gtest.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::gateway {
namespace {

class RequestMappingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = testing::LoadTestModel().release();
    ASSERT_NE(model_, nullptr);
    model_->context_length = 256;  // small, so context errors are cheap to provoke
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  static absl::StatusOr<PreparedRequest> Prepare(Endpoint endpoint, const std::string& body) {
    absl::StatusOr<ApiRequest> api = endpoint == Endpoint::kChat ? ParseChatCompletionRequest(body)
                                                                 : ParseCompletionRequest(body);
    if (!api.ok()) return api.status();
    return PrepareRequest(*api, *model_, "req-1");
  }

  static ModelContext* model_;
};
ModelContext* RequestMappingTest::model_ = nullptr;

struct BadCase {
  Endpoint endpoint;
  std::string body;
  int http_status;
  std::string message;
};

const std::string kMsgs = R"("messages":[{"role":"user","content":"hi"}])";
std::string Chat(const std::string& extra) {
  return absl::StrCat(R"({"model":"tiny-r1",)", kMsgs, extra.empty() ? "" : ",", extra, "}");
}
std::string Completion(const std::string& extra) {
  return absl::StrCat(R"({"model":"tiny-r1","prompt":"hello")", extra.empty() ? "" : ",", extra,
                      "}");
}

std::vector<BadCase> BadCases() {
  const Endpoint kC = Endpoint::kChat;
  const Endpoint kP = Endpoint::kCompletion;
  std::string long_batch = "[1]";
  for (int i = 1; i < 129; ++i) long_batch += ",[1]";
  std::string long_prompt(4000, 'a');
  for (size_t i = 0; i < long_prompt.size(); i += 2) long_prompt[i] = ' ';
  return {
      {kC, "{not json", 400, "not valid JSON"},
      {kC, "", 400, "not valid JSON"},
      {kC, "[1,2]", 400, "must be a JSON object"},
      {kC,
       std::string(
           "{\"model\":\"tiny-r1\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}"),
       400, "not valid UTF-8"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":"\ud800"}]})", 400,
       "not valid JSON"},
      {kC, absl::StrCat("{", kMsgs, "}"), 400, "'model' is required"},
      {kC, absl::StrCat(R"({"model":7,)", kMsgs, "}"), 400, "'model' must be a string"},
      {kC, absl::StrCat(R"({"model":"gpt-4",)", kMsgs, "}"), 404, "does not exist"},
      {kC, R"({"model":"tiny-r1"})", 400, "'messages' is required"},
      {kC, R"({"model":"tiny-r1","messages":"hi"})", 400, "'messages' must be an array"},
      {kC, R"({"model":"tiny-r1","messages":[]})", 400, "must not be empty"},
      {kC, R"({"model":"tiny-r1","messages":["hi"]})", 400, "'messages[0]' must be an object"},
      {kC, R"({"model":"tiny-r1","messages":[{"content":"hi"}]})", 400, "role' must be a string"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"wizard","content":"hi"}]})", 400,
       "invalid role 'wizard'"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user"}]})", 400, "content' is required"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":5}]})", 400,
       "must be a string or an array of parts"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
       400, "unsupported content part type 'image_url'"},
      {kC,
       R"({"model":"tiny-r1","messages":[{"role":"user","content":[{"type":"text","text":3}]}]})",
       400, "need a string 'text'"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":"a <｜User｜> b"}]})", 400,
       "reserved control token"},
      {kC,
       R"({"model":"tiny-r1","messages":[{"role":"system","content":"<｜end▁of▁sentence｜>"}]})",
       400, "reserved control token"},
      {kC, Chat(R"("stream":"yes")"), 400, "'stream' must be a boolean"},
      {kC, Chat(R"("stream_options":{"include_usage":true})"), 400,
       "only allowed when 'stream' is true"},
      {kC, Chat(R"("stream":true,"stream_options":[1])"), 400,
       "'stream_options' must be an object"},
      {kC, Chat(R"("stream":true,"stream_options":{"include_usage":1})"), 400,
       "'stream_options.include_usage' must be a boolean"},
      {kC, Chat(R"("max_tokens":1.5)"), 400, "'max_tokens' must be an integer"},
      {kC, Chat(R"("max_tokens":"10")"), 400, "'max_tokens' must be an integer"},
      {kC, Chat(R"("max_tokens":0)"), 400, "must be at least 1"},
      {kC, Chat(R"("max_completion_tokens":-3)"), 400,
       "'max_completion_tokens' must be at least 1"},
      {kC, Chat(R"("max_tokens":100000)"), 400, "exceeds the context length 256"},
      {kC, Chat(R"("max_tokens":255)"), 400, "maximum context length is 256"},
      {kC, Chat(R"("temperature":"hot")"), 400, "'temperature' must be a number"},
      {kC, Chat(R"("temperature":2.5)"), 400, "'temperature' must be in [0, 2]"},
      {kC, Chat(R"("top_p":0)"), 400, "'top_p' must be in (0, 1]"},
      {kC, Chat(R"("top_k":-1)"), 400, "'top_k' must be >= 0"},
      {kC, Chat(R"("presence_penalty":3)"), 400, "'presence_penalty' must be in [-2, 2]"},
      {kC, Chat(R"("frequency_penalty":-2.5)"), 400, "'frequency_penalty' must be in [-2, 2]"},
      {kC, Chat(R"("seed":-1)"), 400, "'seed' must be >= 0"},
      {kC, Chat(R"("stop":5)"), 400, "'stop' must be a string or a list"},
      {kC, Chat(R"("stop":["a","b","c","d","e"])"), 400, "at most 4"},
      {kC, Chat(R"("stop":["a",1])"), 400, "'stop' entries must be strings"},
      {kC, Chat(R"("stop":"")"), 400, "must not be empty"},
      {kC, Chat(R"("reasoning_effort":"extreme")"), 400, "low"},
      {kC, Chat(R"("reasoning_effort":1)"), 400, "'reasoning_effort' must be a string"},
      {kC, Chat(R"("logprobs":"yes")"), 400, "'logprobs' must be a boolean"},
      {kC, Chat(R"("logprobs":true,"top_logprobs":21)"), 400, "'top_logprobs' must be in [0, 20]"},
      {kC, Chat(R"("top_logprobs":2)"), 400, "requires 'logprobs'"},
      {kC, Chat(R"("n":0)"), 400, "'n' must be in [1, 16], got 0"},
      {kC, Chat(R"("n":17)"), 400, "'n' must be in [1, 16], got 17"},
      {kP, Completion(R"("n":1.5)"), 400, "'n' must be an integer"},
      {kC, Chat(R"("ignore_eos":"no")"), 400, "'ignore_eos' must be a boolean"},
      {kC, Chat(R"("max_tokens":8,"max_completion_tokens":9)"), 400,
       "'max_completion_tokens' (9) and 'max_tokens' (8) disagree"},
      {kC, Chat(R"("user":42)"), 400, "'user' must be a string"},
      {kC, Chat(R"("metadata":"tag")"), 400, "'metadata' must be an object"},
      {kC, Chat(R"("metadata":{"k":1})"), 400, "'metadata.k' must be a string"},
      {kC, Chat(absl::StrCat(R"("metadata":{")", std::string(65, 'k'), R"(":"v"})")), 400,
       "keys must be at most 64 characters"},
      {kC, Chat(absl::StrCat(R"("metadata":{"k":")", std::string(513, 'v'), R"("})")), 400,
       "'metadata.k' must be at most 512 characters"},
      {kC, Chat(R"("store":"yes")"), 400, "'store' must be a boolean"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi","name":7}]})", 400,
       "'messages[0].name' must be a string"},
      {kP, R"({"model":"tiny-r1"})", 400, "'prompt' is required"},
      {kP, R"({"model":"tiny-r1","prompt":{"a":1}})", 400, "'prompt' must be a string, an array"},
      {kP, R"({"model":"tiny-r1","prompt":[]})", 400, "'prompt' must not be empty"},
      {kP, R"({"model":"tiny-r1","prompt":[1,"a"]})", 400, "or a batch: an array of strings"},
      {kP, R"({"model":"tiny-r1","prompt":["a",[1]]})", 400, "(not a mix)"},
      {kP, R"({"model":"tiny-r1","prompt":[[1],[2,"x"]]})", 400, "or of arrays of token ids"},
      {kP, R"({"model":"tiny-r1","prompt":["a","b","c","d","e","f","g","h","i"],"n":15})", 400,
       "9 prompts x 'n' 15 choices exceed the 128"},
      {kP, absl::StrCat(R"({"model":"tiny-r1","prompt":[)", long_batch, "]}"), 400,
       "'prompt' batches at most 128 prompts, got 129"},
      {kP, R"({"model":"tiny-r1","prompt":[1,999999]})", 400, "token id 999999 is outside"},
      {kP, R"({"model":"tiny-r1","prompt":[-1]})", 400, "token id -1 is outside"},
      {kP, R"({"model":"tiny-r1","prompt":""})", 400, "'prompt' must not be empty"},
      {kP, absl::StrCat(R"({"model":"tiny-r1","prompt":")", long_prompt, R"("})"), 400,
       "maximum context length is 256"},
      {kP, Completion(R"("echo":true,"suffix":"x")"), 400,
       "'echo' cannot be combined with 'suffix'"},
      {kP, Completion(R"("echo":"yes")"), 400, "'echo' must be a boolean"},
      {kP, Completion(R"("max_tokens":0)"), 400, "(0 is allowed with 'echo': true)"},
      {kP, Completion(R"("echo":true,"max_tokens":-1)"), 400, "must be at least 0"},
      {kC, Chat(R"("max_tokens":0)"), 400, "'max_tokens' must be at least 1, got 0"},
      {kP, Completion(R"("suffix":3)"), 400, "'suffix' must be a string"},
      {kP, R"({"model":"tiny-r1","prompt":[1,2],"suffix":"x"})", 400,
       "'suffix' needs a text 'prompt'"},
      {kP, Completion(R"("suffix":"a<｜fim▁hole｜>b")"), 400,
       "'suffix' contains the reserved control token"},
      {kC,
       R"({"model":"tiny-r1","messages":[{"role":"assistant","content":"a","prefix":true},
          {"role":"user","content":"hi"}]})",
       400, "'messages[0].prefix' is only allowed on the last message"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi","prefix":true}]})", 400,
       "only allowed on the last message, an assistant's"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"},
          {"role":"assistant","content":"a","prefix":"yes"}]})",
       400, "'prefix' must be a boolean"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"},
          {"role":"assistant","content":"a","reasoning_content":5}]})",
       400, "'messages[1].reasoning_content' must be a string"},
      {kC, R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"},
          {"role":"assistant","content":"","reasoning_content":"<｜User｜>","prefix":true}]})",
       400, "'messages[1].reasoning_content' contains the reserved control token"},
      {kP, Completion(R"("logprobs":50)"), 400, "'logprobs' must be in [0, 20]"},
      {kP, Completion(R"("best_of":3)"), 400, "'best_of' = 1"},
      {kP, absl::StrCat(R"({"model":"other",)", R"("prompt":"x"})"), 404, "does not exist"},
  };
}

TEST_F(RequestMappingTest, RejectsMalformedRequestsWithStatusAndMessage) {
  std::vector<BadCase> cases = BadCases();
  ASSERT_GE(cases.size(), 30u);
  for (const BadCase& c : cases) {
    absl::StatusOr<PreparedRequest> p = Prepare(c.endpoint, c.body);
    ASSERT_FALSE(p.ok()) << c.body;
    EXPECT_EQ(HttpStatusCode(p.status().code()), c.http_status) << c.body << " -> " << p.status();
    EXPECT_TRUE(absl::StrContains(p.status().message(), c.message))
        << c.body << " -> " << p.status() << " (want '" << c.message << "')";
  }
}

TEST_F(RequestMappingTest, ErrorsNameTheParam) {
  absl::StatusOr<PreparedRequest> p = Prepare(Endpoint::kChat, Chat(R"("temperature":9)"));
  ASSERT_FALSE(p.ok());
  const std::string body = OpenAiErrorBody(p.status());
  EXPECT_TRUE(absl::StrContains(body, R"("param":"temperature")")) << body;
  EXPECT_TRUE(absl::StrContains(body, R"("type":"invalid_request_error")")) << body;
  p = Prepare(Endpoint::kChat, absl::StrCat(R"({"model":"x",)", kMsgs, "}"));
  EXPECT_TRUE(absl::StrContains(OpenAiErrorBody(p.status()), R"("code":"model_not_found")"));
}

TEST_F(RequestMappingTest, PriorityGoesToTheGenerationAndIsBounded) {
  absl::StatusOr<PreparedRequest> p = Prepare(Endpoint::kChat, Chat(R"("priority":7)"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->generation.priority, 7);
  EXPECT_EQ(ChoiceRequest(p->generation, 1).priority, 7);
  p = Prepare(Endpoint::kChat, Chat(R"("priority":-3)"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->generation.priority, -3);
  EXPECT_EQ(Prepare(Endpoint::kChat, Chat("")).value().generation.priority, 0);
  for (const char* bad : {R"("priority":1001)", R"("priority":"high")", R"("priority":1.5)"}) {
    p = Prepare(Endpoint::kChat, Chat(bad));
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(OpenAiErrorBody(p.status()), R"("param":"priority")")) << bad;
  }
}

TEST_F(RequestMappingTest, ChatRendersTemplateAndBuildsGeneration) {
  absl::StatusOr<PreparedRequest> p =
      Prepare(Endpoint::kChat,
              R"({"model":"tiny-r1","messages":[{"role":"system","content":"Be brief."},
          {"role":"user","content":[{"type":"text","text":"Hello"},{"type":"text","text":"there"}]}],
          "max_completion_tokens":32,"temperature":0.6,"top_p":0.95,"top_k":40,"seed":7,
          "stop":"END","stream":true,"stream_options":{"include_usage":true},
          "reasoning_effort":"low","presence_penalty":0.5,"frequency_penalty":-0.5})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->stream);
  EXPECT_TRUE(p->include_usage);
  EXPECT_TRUE(p->split_reasoning);
  EXPECT_TRUE(p->starts_in_reasoning);  // R1's template opens <think>
  EXPECT_EQ(p->stop, std::vector<std::string>{"END"});
  const GenerationRequest& g = p->generation;
  EXPECT_EQ(g.request_id, "req-1");
  EXPECT_EQ(g.max_new_tokens, 32);
  EXPECT_DOUBLE_EQ(g.sampling.temperature, 0.6);
  EXPECT_DOUBLE_EQ(g.sampling.top_p, 0.95);
  EXPECT_EQ(g.sampling.top_k, 40);
  EXPECT_EQ(g.sampling.seed, 7u);
  EXPECT_DOUBLE_EQ(g.sampling.presence_penalty, 0.5);
  EXPECT_DOUBLE_EQ(g.sampling.frequency_penalty, -0.5);
  EXPECT_EQ(g.thinking_budget, 256);
  EXPECT_EQ(g.think_close_ids, model_->think_close_ids);
  EXPECT_FALSE(g.think_close_ids.empty());
  EXPECT_EQ(g.think_close_ids[0], 128799);
  EXPECT_EQ(g.sample_vocab, model_->vocab_size);
  EXPECT_EQ(p->prompt_tokens, static_cast<int32_t>(g.prompt_ids.size()));
  // BOS once (from the template), the user's text, and the generation prompt.
  ASSERT_FALSE(g.prompt_ids.empty());
  EXPECT_EQ(g.prompt_ids[0], 0);
  absl::StatusOr<std::string> text = model_->tokenizer->Decode(g.prompt_ids);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(absl::StrContains(*text, "Be brief."));
  EXPECT_TRUE(absl::StrContains(*text, "<｜User｜>Hello\nthere<｜Assistant｜><think>\n")) << *text;
}

TEST_F(RequestMappingTest, DefaultsMaxTokensAndTemperature) {
  absl::StatusOr<PreparedRequest> p = Prepare(Endpoint::kChat, Chat(""));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->generation.max_new_tokens, 64);  // the server default
  EXPECT_DOUBLE_EQ(p->generation.sampling.temperature, 1.0);
  EXPECT_EQ(p->generation.thinking_budget, -1);
  EXPECT_FALSE(p->stream);
  // Near the context end the default shrinks to the room left.
  model_->default_max_tokens = 100000;
  p = Prepare(Endpoint::kChat, Chat(""));
  model_->default_max_tokens = 64;
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->generation.max_new_tokens, 256 - p->prompt_tokens);
}

TEST_F(RequestMappingTest, CompletionPromptsAsTextAndIds) {
  absl::StatusOr<PreparedRequest> p = Prepare(
      Endpoint::kCompletion, R"({"model":"tiny-r1","prompt":"<｜User｜>hi","max_tokens":5})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->split_reasoning);
  const std::optional<int32_t> user = model_->tokenizer->TokenToId("<｜User｜>");
  ASSERT_TRUE(user.has_value());
  // The raw interface keeps the chat markers (see request_mapping.cc); BOS text is not BOS.
  EXPECT_EQ(p->generation.prompt_ids[0], 0);  // BOS added per tokenizer_config.json
  EXPECT_EQ(p->generation.prompt_ids[1], *user);
  EXPECT_EQ(p->generation.max_new_tokens, 5);

  p = Prepare(Endpoint::kCompletion, R"({"model":"tiny-r1","prompt":[0, 128799, 42]})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->generation.prompt_ids, (std::vector<int32_t>{0, 128799, 42}));
  EXPECT_EQ(p->prompt_tokens, 3);

  p = Prepare(Endpoint::kCompletion, R"({"model":"tiny-r1","prompt":["single"],"logprobs":2})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->generation.sampling.logprobs);
  EXPECT_EQ(p->generation.sampling.top_logprobs, 2);
}

TEST_F(RequestMappingTest, EchoStartsWithThePromptAndScoresItWithLogprobs) {
  absl::StatusOr<PreparedRequest> p =
      Prepare(Endpoint::kCompletion, Completion(R"("echo":true,"max_tokens":3)"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->echo_text, "hello");
  EXPECT_FALSE(p->score_only);
  EXPECT_FALSE(p->generation.prompt_logprobs.has_value());  // no logprobs: nothing to score
  EXPECT_EQ(p->generation.max_new_tokens, 3);

  p = Prepare(Endpoint::kCompletion, Completion(R"("echo":true,"max_tokens":0,"logprobs":2)"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->score_only);
  EXPECT_EQ(p->generation.max_new_tokens, 1);  // one token is made, and dropped
  EXPECT_EQ(p->generation.prompt_logprobs, 2);

  // A token-id prompt echoes its decoded text, special tokens (BOS) skipped.
  std::vector<int32_t> ids = *model_->tokenizer->Encode("hi there", engine::EncodeOptions{});
  ASSERT_EQ(ids[0], 0);
  std::string list;
  for (int32_t id : ids) absl::StrAppend(&list, list.empty() ? "" : ",", id);
  p = Prepare(Endpoint::kCompletion,
              absl::StrCat(R"({"model":"tiny-r1","echo":true,"logprobs":0,"prompt":[)", list,
                           "]}"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->echo_text, "hi there");
  EXPECT_EQ(p->generation.prompt_logprobs, 0);

  // Chat has no echo, so its max_tokens error does not point there.
  p = Prepare(Endpoint::kChat, Chat(R"("max_tokens":0)"));
  ASSERT_FALSE(p.ok());
  EXPECT_FALSE(absl::StrContains(p.status().message(), "echo")) << p.status();

  p = Prepare(Endpoint::kCompletion, Completion(R"("echo":false,"logprobs":1)"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->echo_text.has_value());
  EXPECT_FALSE(p->generation.prompt_logprobs.has_value());
}

TEST_F(RequestMappingTest, BatchedPromptsPrepareOneRequestEach) {
  absl::StatusOr<ApiRequest> api = ParseCompletionRequest(
      R"({"model":"tiny-r1","prompt":[[0,5,6],[0,7],[9]],"max_tokens":2,"echo":true,
          "logprobs":1,"seed":4})");
  ASSERT_TRUE(api.ok()) << api.status();
  ASSERT_EQ(api->prompt_batch.size(), 3u);
  absl::StatusOr<std::vector<PreparedRequest>> batch = PrepareBatch(*api, *model_, "cmpl-x");
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 3u);
  EXPECT_EQ((*batch)[1].generation.prompt_ids, (std::vector<int32_t>{0, 7}));
  EXPECT_EQ((*batch)[1].generation.request_id, "cmpl-x-p1");
  EXPECT_EQ((*batch)[2].prompt_tokens, 1);
  EXPECT_EQ((*batch)[0].generation.prompt_logprobs, 1);
  EXPECT_EQ((*batch)[2].generation.max_new_tokens, 2);
  // PrepareRequest alone (the Batch API, gRPC) takes one prompt.
  EXPECT_EQ(PrepareRequest(*api, *model_, "r").status().code(),
            absl::StatusCode::kInvalidArgument);

  // Texts too; a batch of one is that prompt.
  api = ParseCompletionRequest(R"({"model":"tiny-r1","prompt":["hello","hi there"]})");
  ASSERT_TRUE(api.ok()) << api.status();
  batch = PrepareBatch(*api, *model_, "cmpl-y");
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 2u);
  EXPECT_EQ((*batch)[0].generation.prompt_ids,
            *model_->tokenizer->Encode("hello", engine::EncodeOptions{}));
  api = ParseCompletionRequest(R"({"model":"tiny-r1","prompt":[[3,4]]})");
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_TRUE(api->prompt_batch.empty());
  EXPECT_EQ(api->prompt_ids, (std::vector<int64_t>{3, 4}));

  // A bad prompt fails the request, named, with its param.
  api = ParseCompletionRequest(R"({"model":"tiny-r1","prompt":[[1],[999999]]})");
  ASSERT_TRUE(api.ok()) << api.status();
  batch = PrepareBatch(*api, *model_, "cmpl-z");
  ASSERT_FALSE(batch.ok());
  EXPECT_TRUE(absl::StrContains(batch.status().message(), "prompt[1]: token id 999999"))
      << batch.status();
  EXPECT_EQ(HttpStatusCode(batch.status().code()), 400);
  EXPECT_TRUE(batch.status().GetPayload(kErrorParamPayload).has_value());
}

TEST_F(RequestMappingTest, UserTextMayMentionThinkTags) {
  absl::StatusOr<PreparedRequest> p = Prepare(
      Endpoint::kChat,
      R"({"model":"tiny-r1","messages":[{"role":"developer","content":"x"},{"role":"user","content":"what is <think>?"},
         {"role":"assistant","content":null},{"role":"user","content":"ok"}]})");
  EXPECT_TRUE(p.ok()) << p.status();
}

TEST_F(RequestMappingTest, AcceptsCurrentOpenAiFieldsAndIgnoresUnknownOnes) {
  std::string metadata = R"("metadata":{)";
  for (int i = 0; i < 16; ++i) absl::StrAppend(&metadata, i ? "," : "", "\"k", i, "\":\"v\"");
  metadata += "}";
  absl::StatusOr<PreparedRequest> p = Prepare(
      Endpoint::kChat,
      absl::StrCat(R"({"model":"tiny-r1","messages":[{"role":"developer","content":"Be brief."},
         {"role":"user","content":"hi","name":"ann"}],"max_tokens":12,"max_completion_tokens":12,
         "user":"user-1234","store":false,"some_future_field":{"x":[1,2]},"service_tier":"auto",)",
                   metadata, "}"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->generation.max_new_tokens, 12);
  // developer renders exactly as system does.
  absl::StatusOr<PreparedRequest> as_system =
      Prepare(Endpoint::kChat,
              R"({"model":"tiny-r1","messages":[{"role":"system","content":"Be brief."},
         {"role":"user","content":"hi"}],"max_tokens":12})");
  ASSERT_TRUE(as_system.ok()) << as_system.status();
  EXPECT_EQ(p->generation.prompt_ids, as_system->generation.prompt_ids);

  absl::StatusOr<ApiRequest> api = ParseChatCompletionRequest(
      Chat(R"("user":"u","metadata":{"a":"1","b":"2"},"max_completion_tokens":5)"));
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(api->user, "u");
  EXPECT_EQ(api->metadata.size(), 2u);
  EXPECT_EQ(api->max_tokens, 5);
  // 17 keys are one too many.
  std::string too_many = metadata.substr(0, metadata.size() - 1) + R"(,"k16":"v"})";
  EXPECT_FALSE(ParseChatCompletionRequest(Chat(too_many)).ok());
}

TEST_F(RequestMappingTest, ReasonerLogprobsRuleIsConfigurable) {
  const std::string body = Chat(R"("logprobs":true,"top_logprobs":2)");
  absl::StatusOr<PreparedRequest> p = Prepare(Endpoint::kChat, body);
  ASSERT_TRUE(p.ok()) << p.status();  // default: served
  EXPECT_TRUE(p->generation.sampling.logprobs);
  EXPECT_EQ(p->generation.sampling.top_logprobs, 2);
  model_->reject_reasoner_logprobs = true;
  p = Prepare(Endpoint::kChat, body);
  absl::StatusOr<PreparedRequest> without = Prepare(Endpoint::kChat, Chat(R"("logprobs":false)"));
  absl::StatusOr<PreparedRequest> completion =
      Prepare(Endpoint::kCompletion, Completion(R"("logprobs":2)"));
  model_->reject_reasoner_logprobs = false;
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(HttpStatusCode(p.status().code()), 400);
  EXPECT_TRUE(absl::StrContains(OpenAiErrorBody(p.status()), R"("param":"logprobs")"));
  EXPECT_TRUE(without.ok()) << without.status();
  EXPECT_TRUE(completion.ok()) << completion.status();  // completions do not reason
}

TEST_F(RequestMappingTest, SeveralChoicesGetDistinctIdsAndSeeds) {
  absl::StatusOr<PreparedRequest> p = Prepare(Endpoint::kChat, Chat(R"("n":3,"seed":7)"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->n, 3);
  const GenerationRequest first = ChoiceRequest(p->generation, 0);
  const GenerationRequest second = ChoiceRequest(p->generation, 1);
  const GenerationRequest third = ChoiceRequest(p->generation, 2);
  EXPECT_EQ(first.request_id, "req-1");
  EXPECT_EQ(first.sampling.seed, 7u);  // choice 0 is the request itself
  EXPECT_EQ(second.request_id, "req-1-1");
  EXPECT_EQ(third.request_id, "req-1-2");
  ASSERT_TRUE(second.sampling.seed && third.sampling.seed);
  EXPECT_NE(*second.sampling.seed, 7u);
  EXPECT_NE(*second.sampling.seed, *third.sampling.seed);
  EXPECT_EQ(ChoiceRequest(p->generation, 1).sampling.seed, second.sampling.seed);  // stable
  EXPECT_EQ(second.prompt_ids, first.prompt_ids);
  // Without a seed the choices stay unseeded (the worker seeds each from its distinct id).
  p = Prepare(Endpoint::kCompletion, Completion(R"("n":2)"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->n, 2);
  EXPECT_FALSE(ChoiceRequest(p->generation, 1).sampling.seed.has_value());
}

std::string Decoded(const PreparedRequest& p, const ModelContext& model) {
  absl::StatusOr<std::string> text = model.tokenizer->Decode(p.generation.prompt_ids);
  return text.ok() ? *text : "";
}

TEST_F(RequestMappingTest, FillInTheMiddleLayout) {
  absl::StatusOr<PreparedRequest> p = Prepare(
      Endpoint::kCompletion,
      R"({"model":"tiny-r1","prompt":"def f(x):\n","suffix":"\n    return y\n","max_tokens":4})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->split_reasoning);
  const std::vector<int32_t>& ids = p->generation.prompt_ids;
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids[0], 0);           // BOS
  EXPECT_EQ(ids[1], 128801);      // <｜fim▁begin｜>
  EXPECT_EQ(ids.back(), 128802);  // <｜fim▁end｜>
  EXPECT_EQ(Decoded(*p, *model_),
            "<｜begin▁of▁sentence｜><｜fim▁begin｜>def f(x):\n<｜fim▁hole｜>\n    return "
            "y\n<｜fim▁end｜>");
  // An empty prompt is fine with a suffix.
  p = Prepare(Endpoint::kCompletion, R"({"model":"tiny-r1","prompt":"","suffix":"end"})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->generation.prompt_ids[2], 128800);  // <｜fim▁hole｜> right after begin
}

TEST_F(RequestMappingTest, PrefixCompletionContinuesTheLastAssistantMessage) {
  const std::string head = R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"},)";
  // Content only: an empty thought is closed and the answer continues.
  absl::StatusOr<PreparedRequest> p = Prepare(
      Endpoint::kChat, head + R"({"role":"assistant","content":"```python\n","prefix":true}]})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->starts_in_reasoning);
  EXPECT_TRUE(p->split_reasoning);
  EXPECT_TRUE(absl::EndsWith(Decoded(*p, *model_),
                             "<｜User｜>hi<｜Assistant｜><think>\n\n</think>\n\n```python\n"))
      << Decoded(*p, *model_);
  // Reasoning only: the thought continues.
  p = Prepare(Endpoint::kChat,
              head + R"({"role":"assistant","content":"","reasoning_content":"First,",
                  "prefix":true}]})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->starts_in_reasoning);
  EXPECT_TRUE(absl::EndsWith(Decoded(*p, *model_), "<｜Assistant｜><think>\nFirst,"));
  // Both: the thought is closed after the reasoning, the answer continues.
  p = Prepare(Endpoint::kChat,
              head + R"({"role":"assistant","content":"So","reasoning_content":"Easy.",
                  "prefix":true}]})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->starts_in_reasoning);
  EXPECT_TRUE(absl::EndsWith(Decoded(*p, *model_), "<think>\nEasy.\n</think>\n\nSo"));
  // Without "prefix" the same messages end with a finished assistant turn and a new prompt.
  p = Prepare(Endpoint::kChat, head + R"({"role":"assistant","content":"So"}]})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(
      absl::EndsWith(Decoded(*p, *model_), "So<｜end▁of▁sentence｜><｜Assistant｜><think>\n"))
      << Decoded(*p, *model_);
}

TEST(Utf8Test, Validates) {
  EXPECT_TRUE(IsValidUtf8("héllo ✓ 😀"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("a\x80"));
}

}  // namespace
}  // namespace moeserve::gateway
