// Tool calling in the gateway: the markup parser, the request rules, the prompt the tools and
// earlier calls render to, the forced-call grammar, and the OpenAI response shapes.
#include "gateway/tool_calls.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "gateway/openai_format.h"
#include "gateway/output_assembler.h"
#include "gateway/request_mapping.h"
#include "gtest/gtest.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::gateway {
namespace {

// The "param" an error names (null when none).
nlohmann::json ErrorParam(const absl::Status& status) {
  return nlohmann::json::parse(OpenAiErrorBody(status))["error"]["param"];
}

const std::string kCall =
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>"
    "add\n```json\n \n {\"a\": 1, \"b\": [2, \"`\"]}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";

struct Parsed {
  std::string content;
  std::vector<ToolCallDelta> calls;  // merged by index
};

Parsed Feed(const std::vector<std::string>& pieces) {
  ToolCallParser parser;
  Parsed out;
  auto take = [&](ToolCallParser::Output o) {
    out.content += o.content;
    for (ToolCallDelta& d : o.calls) {
      if (!d.id.empty()) {
        EXPECT_EQ(d.index, static_cast<int>(out.calls.size()));
        out.calls.push_back(d);
      } else {
        ASSERT_LT(d.index, static_cast<int>(out.calls.size()));
        out.calls[static_cast<size_t>(d.index)].arguments += d.arguments;
      }
    }
  };
  for (const std::string& p : pieces) take(parser.Add(p));
  take(parser.Flush());
  return out;
}

// Splits UTF-8 text into pieces of `n` code points.
std::vector<std::string> Pieces(const std::string& text, size_t n) {
  std::vector<std::string> out;
  std::string cur;
  size_t count = 0;
  for (char c : text) {
    if ((c & 0xC0) != 0x80 && count++ == n) {
      out.push_back(cur);
      cur.clear();
      count = 1;
    }
    cur += c;
  }
  out.push_back(cur);
  return out;
}

TEST(ToolCallParserTest, ReadsCallsWholeOrStreamedAlike) {
  const std::string text = "Let me check." + kCall;
  for (size_t n : {1u, 2u, 3u, 7u, 1000u}) {
    Parsed p = Feed(Pieces(text, n));
    EXPECT_EQ(p.content, "Let me check.") << n;
    ASSERT_EQ(p.calls.size(), 2u) << n;
    EXPECT_EQ(p.calls[0].name, "get_weather");
    EXPECT_EQ(p.calls[0].arguments, "{\"city\": \"Paris\"}") << n;
    EXPECT_EQ(p.calls[1].name, "add");
    EXPECT_EQ(p.calls[1].arguments, "{\"a\": 1, \"b\": [2, \"`\"]}") << n;
    EXPECT_TRUE(absl::StartsWith(p.calls[0].id, "call_"));
    EXPECT_NE(p.calls[0].id, p.calls[1].id);
  }
}

TEST(ToolCallParserTest, PlainTextAndNearMissesStayContent) {
  for (const std::string text : {"no calls here", "a <｜tool not a marker", "ends with <｜tool▁ca",
                                 "```json\n{}\n```"}) {
    for (size_t n : {1u, 4u, 100u}) {
      Parsed p = Feed(Pieces(text, n));
      EXPECT_EQ(p.content, text);
      EXPECT_TRUE(p.calls.empty());
    }
  }
}

TEST(ToolCallParserTest, ACallCutShortKeepsItsPartialArguments) {
  Parsed p = Feed(Pieces(
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"x\": 1", 3));
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].name, "f");
  EXPECT_EQ(p.calls[0].arguments, "{\"x\": 1");
  // Cut inside the header: no call to report.
  p = Feed({"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>func"});
  EXPECT_TRUE(p.calls.empty());
  EXPECT_EQ(p.content, "");
}

class ToolRequestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = testing::LoadTestModel().release();
    ASSERT_NE(model_, nullptr);
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static absl::StatusOr<PreparedRequest> Prepare(const std::string& body) {
    absl::StatusOr<ApiRequest> api = ParseChatCompletionRequest(body);
    if (!api.ok()) return api.status();
    return PrepareRequest(*api, *model_, "req-1");
  }
  static std::string Decoded(const PreparedRequest& p) {
    absl::StatusOr<std::string> text = model_->tokenizer->Decode(p.generation.prompt_ids);
    return text.ok() ? *text : "";
  }
  static std::string Body(const std::string& messages, const std::string& extra) {
    return absl::StrCat(R"({"model":"tiny-r1","messages":)", messages, ",", kTools,
                        extra.empty() ? "" : ",", extra, "}");
  }
  static constexpr const char* kTools = R"("tools":[
      {"type":"function","function":{"name":"get_weather","description":"Weather in a city",
       "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
      {"type":"function","function":{"name":"now"}}])";
  static ModelContext* model_;
};
ModelContext* ToolRequestTest::model_ = nullptr;

const std::string kUser = R"([{"role":"user","content":"Weather in Paris?"}])";

TEST_F(ToolRequestTest, ToolsAreDescribedInTheSystemPrompt) {
  absl::StatusOr<PreparedRequest> p = Prepare(Body(kUser, ""));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->parse_tool_calls);
  EXPECT_FALSE(p->generation.tool_calls.has_value()) << "auto forces nothing";
  const std::string prompt = Decoded(*p);
  EXPECT_TRUE(absl::StartsWith(prompt, "<｜begin▁of▁sentence｜>## Tools")) << prompt;
  EXPECT_TRUE(absl::StrContains(prompt, "- get_weather: Weather in a city\n  Parameters (JSON "
                                        "Schema): {\"type\":\"object\",\"properties\""))
      << prompt;
  EXPECT_TRUE(absl::StrContains(prompt, "- now\n  Parameters (JSON Schema): none")) << prompt;
  EXPECT_TRUE(absl::EndsWith(prompt, "<｜User｜>Weather in Paris?<｜Assistant｜><think>\n"));
  // tool_choice none: neither described nor parsed.
  p = Prepare(Body(kUser, R"("tool_choice":"none")"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->parse_tool_calls);
  EXPECT_FALSE(absl::StrContains(Decoded(*p), "## Tools"));
  // A system prompt of the client's comes first, the tools after it.
  p = Prepare(Body(R"([{"role":"system","content":"Be brief."},{"role":"user","content":"x"}])", ""));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(absl::StartsWith(Decoded(*p), "<｜begin▁of▁sentence｜>Be brief.\n\n## Tools"));
}

TEST_F(ToolRequestTest, EarlierCallsAndResultsRenderThroughTheTemplate) {
  const std::string messages = R"([{"role":"user","content":"Weather in Paris?"},
      {"role":"assistant","content":null,"reasoning_content":"I should look it up.",
       "tool_calls":[{"id":"call_1","type":"function",
                      "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"{\"temp\":21}"}])";
  absl::StatusOr<PreparedRequest> p = Prepare(Body(messages, ""));
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string prompt = Decoded(*p);
  EXPECT_TRUE(absl::EndsWith(
      prompt,
      "<｜User｜>Weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"
      "function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Paris\"}\n```<｜tool▁call▁end｜>"
      "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{\"temp\":21}<｜tool▁output▁end｜>"
      "<｜tool▁outputs▁end｜>"))
      << prompt;
  EXPECT_FALSE(p->starts_in_reasoning) << "after tool results R1's template opens no new thought";

  // DeepSeek's pass-back rule: in the current turn, a call's reasoning_content is required...
  std::string without = messages;
  without.replace(without.find(R"("reasoning_content":"I should look it up.",)"),
                  std::string(R"("reasoning_content":"I should look it up.",)").size(), "");
  absl::StatusOr<PreparedRequest> bad = Prepare(Body(without, ""));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ErrorParam(bad.status()), "messages[1].reasoning_content") << bad.status();
  // ...while in an earlier turn (a user message came after) it is not.
  std::string earlier = without;
  earlier.replace(earlier.size() - 1, 1, R"(,{"role":"assistant","content":"21 degrees."},
                                          {"role":"user","content":"Thanks!"}])");
  p = Prepare(Body(earlier, ""));
  EXPECT_TRUE(p.ok()) << p.status();
}

TEST_F(ToolRequestTest, ForcedCallsBuildAGrammar) {
  absl::StatusOr<PreparedRequest> p = Prepare(Body(kUser, R"("tool_choice":"required")"));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(p->generation.tool_calls.has_value());
  const ToolCallGrammarIds& g = *p->generation.tool_calls;
  ASSERT_EQ(g.options.size(), 2u);
  EXPECT_TRUE(g.parallel);
  auto text = [&](const std::vector<int32_t>& ids) { return *model_->tokenizer->Decode(ids); };
  EXPECT_EQ(text(g.open), "<｜tool▁calls▁begin｜>");
  EXPECT_EQ(text(g.options[0].head),
            "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n");
  EXPECT_EQ(text(g.tail), "\n```<｜tool▁call▁end｜>");
  EXPECT_EQ(text(g.close), "<｜tool▁calls▁end｜>");
  EXPECT_EQ(g.options[1].arguments,
            R"({"type":"object","properties":{},"additionalProperties":false})");
  ASSERT_TRUE(p->generation.constraint_after_token.has_value());
  EXPECT_EQ(text({*p->generation.constraint_after_token}), "</think>");

  p = Prepare(Body(kUser, R"("tool_choice":{"type":"function","function":{"name":"now"}},
                              "parallel_tool_calls":true)"));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->generation.tool_calls->options.size(), 1u);
  EXPECT_FALSE(p->generation.tool_calls->parallel) << "a named function is called once";
  EXPECT_EQ(text(p->generation.tool_calls->options[0].head),
            "<｜tool▁call▁begin｜>function<｜tool▁sep｜>now\n```json\n");
}

TEST_F(ToolRequestTest, BadToolRequestsAreRefusedWithTheParam) {
  const std::string pattern_tool = R"("tools":[{"type":"function","function":{"name":"f",
      "parameters":{"type":"object","properties":{"s":{"type":"string","pattern":"x+"}}}}}])";
  struct Case {
    std::string body;
    std::string param;
  };
  const std::string m = R"("model":"tiny-r1","messages":[{"role":"user","content":"x"}])";
  const std::vector<Case> cases = {
      {absl::StrCat("{", m, R"(,"tool_choice":"required"})"), "tool_choice"},
      {Body(kUser, R"("tool_choice":"sometimes")"), "tool_choice"},
      {Body(kUser, R"("tool_choice":{"type":"function","function":{"name":"nope"}})"), "tool_choice"},
      {Body(kUser, R"("parallel_tool_calls":"yes")"), "parallel_tool_calls"},
      {absl::StrCat("{", m, R"(,"tools":[{"type":"function","function":{"name":"a b"}}]})"),
       "tools[0].function.name"},
      {absl::StrCat("{", m, R"(,"tools":[{"type":"retrieval"}]})"), "tools[0].type"},
      {absl::StrCat("{", m, R"(,"tools":[{"type":"function","function":{"name":"f"}},
                                         {"type":"function","function":{"name":"f"}}]})"),
       "tools[1].function.name"},
      {absl::StrCat("{", m, R"(,"tools":{"type":"function"}})"), "tools"},
      {absl::StrCat("{", m, ",", pattern_tool, R"(,"tool_choice":"required"})"),
       "tools[0].function.parameters"},
      {Body(kUser, R"("tool_choice":"required","response_format":{"type":"json_object"})"),
       "response_format"},
      {Body(R"([{"role":"user","content":"x"},{"role":"tool","tool_call_id":"c9","content":"1"}])", ""),
       "messages[1].tool_call_id"},
      {Body(R"([{"role":"user","content":"x"},{"role":"tool","content":"1"}])", ""),
       "messages[1].tool_call_id"},
      {Body(R"([{"role":"user","content":"x"},{"role":"assistant","reasoning_content":"r",
                "tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{}"}}]},
                {"role":"user","content":"y"}])", ""),
       "messages[1].tool_calls"},
      {Body(R"([{"role":"user","content":"x"},{"role":"assistant",
                "tool_calls":[{"id":"c1","function":{"name":"f","arguments":{}}}]}])", ""),
       "messages[1].tool_calls[0].function.arguments"},
      {Body(R"([{"role":"user","tool_calls":[],"content":"x"}])", ""), "messages[0].tool_calls"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<PreparedRequest> p = Prepare(c.body);
    ASSERT_FALSE(p.ok()) << c.body;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(ErrorParam(p.status()), c.param) << p.status() << "\n" << c.body;
  }
  // Under "auto" nothing is enforced, so a schema decoding could not enforce is fine.
  EXPECT_TRUE(Prepare(absl::StrCat("{", m, ",", pattern_tool, "}")).ok());
}

TEST_F(ToolRequestTest, AnswersWithCallsComeOutInOpenAiShape) {
  OutputAssembler a(*model_->tokenizer, /*split_reasoning=*/true, /*starts_in_reasoning=*/true,
                    {}, 5, /*parse_tool_calls=*/true);
  engine::EncodeOptions opts;
  opts.add_special_tokens = false;
  absl::StatusOr<std::vector<int32_t>> ids =
      model_->tokenizer->Encode("Think.</think>\n\nChecking." + kCall, opts);
  ASSERT_TRUE(ids.ok());
  TextDelta all;
  for (int32_t id : *ids) {
    GenerationChunk c;
    c.token_ids = {id};
    all.Append(a.OnChunk(c));
  }
  GenerationChunk last;
  last.finish_reason = FinishReason::kStop;
  all.Append(a.OnChunk(last));
  EXPECT_EQ(a.finish_reason(), FinishReason::kToolCalls);
  EXPECT_EQ(all.reasoning, "Think.");
  EXPECT_EQ(all.content, "Checking.");  // the blank line after </think> is not content
  ASSERT_EQ(all.tool_calls.size(), 2u);

  ResponseMeta meta;
  meta.id = "chatcmpl-1";
  meta.model = "tiny-r1";
  meta.split_reasoning = true;
  nlohmann::json j = CompletionResponseJson(meta, all, a.finish_reason(), a.usage());
  const nlohmann::json& choice = j["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  const nlohmann::json& call = choice["message"]["tool_calls"][1];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "add");
  EXPECT_EQ(nlohmann::json::parse(call["function"]["arguments"].get<std::string>()),
            nlohmann::json::parse(R"({"a": 1, "b": [2, "`"]})"));
  TextDelta first;
  first.tool_calls.push_back({0, "call_x", "f", ""});
  nlohmann::json chunk = DeltaChunkJson(meta, first);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0],
            nlohmann::json::parse(R"({"index":0,"id":"call_x","type":"function",
                                      "function":{"name":"f","arguments":""}})"));
  TextDelta more;
  more.tool_calls.push_back({0, "", "", "{\"a\""});
  chunk = DeltaChunkJson(meta, more);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0],
            nlohmann::json::parse(R"({"index":0,"function":{"arguments":"{\"a\""}})"));
}

}  // namespace
}  // namespace moeserve::gateway
