#include "tools/moeserve/chat_session.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace moeserve::cli {
namespace {

using Json = nlohmann::json;

std::string Delta(const char* field, const std::string& text) {
  Json j = {{"object", "chat.completion.chunk"},
            {"choices", Json::array({{{"index", 0}, {"delta", {{field, text}}}}})}};
  return j.dump();
}

TEST(ConversationTest, SendsAnswersBackWithoutReasoningAndTheSettings) {
  Conversation c;
  ChatSettings s;
  s.model = "tiny";
  s.system = "Be brief.";
  s.reasoning_effort = "low";
  s.max_tokens = 64;
  c.AddTurn("Hi", "Hello!");
  Json body = c.RequestBody(s, "Why?");
  EXPECT_EQ(body["model"], "tiny");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(body["reasoning_effort"], "low");
  EXPECT_EQ(body["max_tokens"], 64);
  EXPECT_FALSE(body.contains("temperature"));
  EXPECT_EQ(body["messages"], Json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Why?"}])"));
  c.Reset();
  s.system.clear();
  s.reasoning_effort.reset();
  body = c.RequestBody(s, "Again");
  EXPECT_EQ(body["messages"], Json::parse(R"([{"role": "user", "content": "Again"}])"));
  EXPECT_FALSE(body.contains("reasoning_effort"));
  EXPECT_EQ(c.turns(), 0u);
}

TEST(SlashCommandTest, ParsesCommandsAndArguments) {
  EXPECT_EQ(ParseSlashCommand("hello /reset").kind, SlashCommand::Kind::kNone);
  EXPECT_EQ(ParseSlashCommand("  /reset ").kind, SlashCommand::Kind::kReset);
  SlashCommand e = ParseSlashCommand("/effort   high ");
  EXPECT_EQ(e.kind, SlashCommand::Kind::kEffort);
  EXPECT_EQ(e.arg, "high");
  SlashCommand sys = ParseSlashCommand("/system Be brief. Really.");
  EXPECT_EQ(sys.kind, SlashCommand::Kind::kSystem);
  EXPECT_EQ(sys.arg, "Be brief. Really.");
  EXPECT_EQ(ParseSlashCommand("/system").arg, "");
  EXPECT_EQ(ParseSlashCommand("/exit").kind, SlashCommand::Kind::kQuit);
  SlashCommand u = ParseSlashCommand("/resett");
  EXPECT_EQ(u.kind, SlashCommand::Kind::kUnknown);
  EXPECT_EQ(u.arg, "/resett");
}

TEST(SlashCommandTest, EffortValues) {
  EXPECT_EQ(*ParseEffort("medium"), "medium");
  EXPECT_FALSE(ParseEffort("default")->has_value());
  EXPECT_EQ(ParseEffort("HIGH").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseEffort("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SlashCommandTest, MaxTokensValues) {
  EXPECT_EQ(ParseSlashCommand("/max-tokens 40").kind, SlashCommand::Kind::kMaxTokens);
  EXPECT_EQ(**ParseMaxTokens("40"), 40);
  EXPECT_FALSE(ParseMaxTokens("default")->has_value());
  for (const char* bad : {"0", "-3", "ten", "1.5", ""}) {
    EXPECT_EQ(ParseMaxTokens(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ReplyRendererTest, ReasoningDimThenAnswerThenUsage) {
  ReplyRenderer r(/*color=*/true);
  std::string out;
  out += *r.OnEvent(R"({"choices":[{"delta":{"role":"assistant","content":""}}]})", 0.01);
  out += *r.OnEvent(Delta("reasoning_content", "Let me"), 0.1);
  out += *r.OnEvent(Delta("reasoning_content", " think."), 0.2);
  out += *r.OnEvent(Delta("content", "Blue"), 0.5);
  out += *r.OnEvent(Delta("content", " sky."), 0.6);
  out += *r.OnEvent(
      R"({"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":9,)"
      R"("prompt_cache_hit_tokens":4,"completion_tokens_details":{"reasoning_tokens":5}}})",
      0.7);
  out += *r.OnEvent("[DONE]", 0.7);
  out += r.Finish();
  EXPECT_EQ(out, "\x1b[2mLet me think.\x1b[0m\n\nBlue sky.\n");
  EXPECT_EQ(r.answer(), "Blue sky.");
  const ReplyStats& s = r.stats();
  EXPECT_TRUE(s.has_usage);
  EXPECT_EQ(s.prompt_tokens, 11);
  EXPECT_EQ(s.cached_tokens, 4);
  EXPECT_EQ(s.reasoning_tokens, 5);
  EXPECT_DOUBLE_EQ(s.first_token_s, 0.1);
  EXPECT_DOUBLE_EQ(s.first_answer_s, 0.5);
  Price p;  // 4 cached x 1 + 7 missed x 2 + 9 out x 10 = 108 per million
  p.input_cache_hit = 1;
  p.input_cache_miss = 2;
  p.output = 10;
  EXPECT_EQ(FormatStats(s, 0.7, p),
            "(prompt 11, cached 4, reasoning 5, answer 4 tokens; first token 0.10 s, "
            "first answer 0.50 s, total 0.70 s; cost USD 0.000108)");
}

TEST(ReplyRendererTest, NoEscapesWithoutColorAndAStopMidReasoningResets) {
  ReplyRenderer plain(/*color=*/false);
  std::string out = *plain.OnEvent(Delta("reasoning_content", "hmm"), 0.1);
  out += *plain.OnEvent(Delta("content", "ok"), 0.2);
  out += plain.Finish();
  EXPECT_EQ(out, "hmm\n\nok\n");

  ReplyRenderer stopped(/*color=*/true);
  out = *stopped.OnEvent(Delta("reasoning_content", "hmm"), 0.1);
  out += stopped.Finish();  // cancelled before any answer
  EXPECT_EQ(out, "\x1b[2mhmm\x1b[0m\n");
  EXPECT_EQ(stopped.answer(), "");
  EXPECT_FALSE(stopped.stats().has_usage);
  EXPECT_EQ(FormatStats(stopped.stats(), 0.2, std::nullopt), "(first token 0.10 s, total 0.20 s)");
}

TEST(ReplyRendererTest, ErrorEventsAndMalformedEvents) {
  ReplyRenderer r(true);
  absl::StatusOr<std::string> e = r.OnEvent(R"({"error":{"message":"worker lost"}})", 0.1);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(e.status().message(), "worker lost");
  EXPECT_EQ(r.OnEvent("{oops", 0.1).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(*r.OnEvent(R"({"choices":"x"})", 0.1), "");
  EXPECT_EQ(*r.OnEvent(R"({"choices":[{"delta":{"content":5}}]})", 0.1), "");
}

TEST(PriceTest, FindsTheModelsRow) {
  Json prices = Json::parse(R"({"object":"list","currency":"USD","data":[
    {"model":"other","input_cache_hit_per_million":9,"input_cache_miss_per_million":9,
     "output_per_million":9},
    {"model":"tiny","input_cache_hit_per_million":0.07,"input_cache_miss_per_million":0.27,
     "output_per_million":1.1}]})");
  std::optional<Price> p = FindPrice(prices, "tiny");
  ASSERT_TRUE(p.has_value());
  EXPECT_DOUBLE_EQ(p->input_cache_hit, 0.07);
  EXPECT_DOUBLE_EQ(p->input_cache_miss, 0.27);
  EXPECT_DOUBLE_EQ(p->output, 1.1);
  EXPECT_FALSE(FindPrice(prices, "nope").has_value());
  EXPECT_FALSE(FindPrice(Json::array(), "tiny").has_value());
}

}  // namespace
}  // namespace moeserve::cli
