#include "gateway/output_assembler.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::gateway {
namespace {

constexpr int32_t kThinkClose = 128799;  // R1's </think>

TEST(StopStringMatcherTest, FindsStopAcrossChunkBoundaries) {
  StopStringMatcher m({"STOP"});
  std::string out;
  for (const char* piece : {"Hello S", "T", "O", "P and more"}) out += m.Add(piece);
  EXPECT_EQ(out, "Hello ");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Add("late"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcherTest, HoldsBackOnlyPossiblePrefixes) {
  StopStringMatcher m({"abc", "xyz"});
  EXPECT_EQ(m.Add("hello a"), "hello ");  // "a" may start "abc"
  EXPECT_EQ(m.Add("b"), "");
  EXPECT_EQ(m.Add("d"), "abd");  // not a stop after all
  EXPECT_EQ(m.Add("x"), "");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Flush(), "x");
}

TEST(StopStringMatcherTest, EarliestOfSeveralStopsWins) {
  StopStringMatcher m({"world", "lo w"});
  EXPECT_EQ(m.Add("hello world"), "hel");
  EXPECT_TRUE(m.stopped());
}

TEST(StopStringMatcherTest, NoStopsPassesThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.Add("abc"), "abc");
  EXPECT_EQ(m.Flush(), "");
}

class OutputAssemblerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = testing::LoadTestModel().release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static std::vector<int32_t> Ids(const std::string& text) {
    engine::EncodeOptions opts;
    opts.add_special_tokens = false;
    absl::StatusOr<std::vector<int32_t>> ids = model_->tokenizer->Encode(text, opts);
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }
  // Feeds `ids` one token per chunk; the last chunk carries `finish`.
  static TextDelta FeedOneByOne(OutputAssembler* a, const std::vector<int32_t>& ids,
                                FinishReason finish, int32_t cached = 0) {
    TextDelta all;
    for (size_t i = 0; i < ids.size(); ++i) {
      GenerationChunk c;
      c.token_ids = {ids[i]};
      c.cached_prompt_tokens = i == 0 ? cached : 0;
      if (i + 1 == ids.size()) c.finish_reason = finish;
      TextDelta d = a->OnChunk(c);
      all.reasoning += d.reasoning;
      all.content += d.content;
    }
    return all;
  }
  static ModelContext* model_;
};
ModelContext* OutputAssemblerTest::model_ = nullptr;

TEST_F(OutputAssemblerTest, SplitsReasoningIntoItsOwnField) {
  ASSERT_NE(model_, nullptr);
  std::vector<int32_t> ids = Ids("Let me think.");
  const size_t reasoning_ids = ids.size();
  ids.push_back(kThinkClose);
  for (int32_t id : Ids("\n\nThe answer is 4.")) ids.push_back(id);
  OutputAssembler a(*model_->tokenizer, /*split_reasoning=*/true, /*starts_in_reasoning=*/true, {},
                    /*prompt_tokens=*/20);
  TextDelta all = FeedOneByOne(&a, ids, FinishReason::kStop, /*cached=*/16);
  EXPECT_EQ(all.reasoning, "Let me think.");
  EXPECT_EQ(all.content, "The answer is 4.");
  EXPECT_TRUE(a.finished());
  EXPECT_EQ(a.finish_reason(), FinishReason::kStop);
  const UsageInfo& u = a.usage();
  EXPECT_EQ(u.prompt_tokens, 20);
  EXPECT_EQ(u.completion_tokens, static_cast<int32_t>(ids.size()));
  EXPECT_EQ(u.reasoning_tokens, static_cast<int32_t>(reasoning_ids + 1));  // incl. </think>
  EXPECT_EQ(u.cached_tokens, 16);
}

TEST_F(OutputAssemblerTest, LogprobsFollowTheTokensIntoTheirSection) {
  std::vector<int32_t> ids = Ids("Hmm.");
  const size_t reasoning_ids = ids.size() + 1;  // + </think>
  ids.push_back(kThinkClose);
  for (int32_t id : Ids("\n\nSo é.")) ids.push_back(id);
  OutputAssembler a(*model_->tokenizer, true, true, {}, 5);
  TextDelta all;
  for (size_t i = 0; i < ids.size(); i += 2) {
    GenerationChunk c;
    for (size_t k = i; k < std::min(ids.size(), i + 2); ++k) {
      c.token_ids.push_back(ids[k]);
      engine::SampleResult r;
      r.token = ids[k];
      r.logprob = -static_cast<float>(k);
      r.top_logprobs = {{ids[k], r.logprob}, {42, -30.0f}};
      c.logprobs.push_back(r);
    }
    if (i + 2 >= ids.size()) c.finish_reason = FinishReason::kStop;
    all.Append(a.OnChunk(c));
  }
  ASSERT_EQ(all.reasoning_logprobs.size(), reasoning_ids);
  ASSERT_EQ(all.reasoning_logprobs.size() + all.content_logprobs.size(), ids.size());
  EXPECT_EQ(static_cast<int32_t>(all.reasoning_logprobs.size()), a.usage().reasoning_tokens);
  std::string bytes;
  for (const LogprobEntry& e : all.content_logprobs) bytes += e.bytes;
  EXPECT_EQ(bytes, "\n\nSo é.");
  EXPECT_EQ(all.reasoning_logprobs.back().bytes, "</think>");
  EXPECT_FLOAT_EQ(all.content_logprobs[0].logprob, -static_cast<float>(reasoning_ids));
  ASSERT_EQ(all.content_logprobs[0].top.size(), 2u);
  EXPECT_EQ(all.content_logprobs[0].top[1].second, -30.0f);
  EXPECT_EQ(all.content_logprobs[0].top[1].first, std::string(*model_->tokenizer->TokenBytes(42)));
  // text_offset counts the characters decoded before each token ("Hmm.</think>" = 12).
  EXPECT_EQ(all.content_logprobs[0].text_offset, 12);
}

TEST_F(OutputAssemblerTest, NoLogprobsWhenTheyDoNotMatchTheTokens) {
  OutputAssembler a(*model_->tokenizer, false, false, {}, 5);
  GenerationChunk c;
  c.token_ids = Ids("two words");
  c.logprobs.resize(1);
  TextDelta d = a.OnChunk(c);
  EXPECT_TRUE(d.content_logprobs.empty());
  EXPECT_EQ(d.content, "two words");
}

TEST_F(OutputAssemblerTest, SameTextWhateverTheChunking) {
  std::vector<int32_t> ids = Ids("Thinking é ✓");
  ids.push_back(kThinkClose);
  for (int32_t id : Ids("\n\nDone 😀 here")) ids.push_back(id);
  OutputAssembler one(*model_->tokenizer, true, true, {"here"}, 3);
  TextDelta a = FeedOneByOne(&one, ids, FinishReason::kLength);
  OutputAssembler all(*model_->tokenizer, true, true, {"here"}, 3);
  GenerationChunk c;
  c.token_ids = ids;
  c.finish_reason = FinishReason::kLength;
  TextDelta b = all.OnChunk(c);
  EXPECT_EQ(a.reasoning, b.reasoning);
  EXPECT_EQ(a.content, b.content);
  EXPECT_EQ(a.content, "Done 😀 ");
  EXPECT_EQ(one.finish_reason(), FinishReason::kStop);  // the stop string, not the length
}

TEST_F(OutputAssemblerTest, StopStringAcrossTokensTruncatesAndStops) {
  OutputAssembler a(*model_->tokenizer, false, false, {"world"}, 1);
  std::vector<int32_t> ids = Ids("hello world and more");
  TextDelta all;
  size_t fed = 0;
  for (int32_t id : ids) {
    GenerationChunk c;
    c.token_ids = {id};
    TextDelta d = a.OnChunk(c);
    all.content += d.content;
    ++fed;
    if (a.finished()) break;
  }
  EXPECT_EQ(all.content, "hello ");
  EXPECT_TRUE(a.stopped_by_string());
  EXPECT_EQ(a.finish_reason(), FinishReason::kStop);
  EXPECT_LT(fed, ids.size());
  EXPECT_EQ(a.usage().completion_tokens, static_cast<int32_t>(fed));
  GenerationChunk late;
  late.token_ids = Ids("x");
  EXPECT_TRUE(a.OnChunk(late).empty());
}

TEST_F(OutputAssemblerTest, StopStringsIgnoreReasoning) {
  std::vector<int32_t> ids = Ids("STOP in reasoning");
  ids.push_back(kThinkClose);
  for (int32_t id : Ids("answer STOP tail")) ids.push_back(id);
  OutputAssembler a(*model_->tokenizer, true, true, {"STOP"}, 1);
  TextDelta d = FeedOneByOne(&a, ids, FinishReason::kLength);
  EXPECT_EQ(d.reasoning, "STOP in reasoning");
  EXPECT_EQ(d.content, "answer ");
}

TEST_F(OutputAssemblerTest, HidesEosAndCountsIt) {
  std::vector<int32_t> ids = Ids("Hi");
  ids.push_back(1);  // EOS, a special token
  OutputAssembler a(*model_->tokenizer, false, false, {}, 1);
  TextDelta d = FeedOneByOne(&a, ids, FinishReason::kStop);
  EXPECT_EQ(d.content, "Hi");
  EXPECT_EQ(a.usage().completion_tokens, static_cast<int32_t>(ids.size()));
}

TEST_F(OutputAssemblerTest, FinishFlushesHeldText) {
  OutputAssembler a(*model_->tokenizer, false, false, {"abc"}, 1);
  GenerationChunk c;
  c.token_ids = Ids("xx ab");
  TextDelta d = a.OnChunk(c);
  EXPECT_EQ(d.content, "xx ");
  d = a.Finish(FinishReason::kCancelled);
  EXPECT_EQ(d.content, "ab");
  EXPECT_EQ(a.finish_reason(), FinishReason::kCancelled);
}

// Completions' echo: the prompt text opens the first delta, outside the stop strings; with
// prompt logprobs its tokens lead the entries (the first unscored) and the completion's text
// offsets count from the end of the echoed text.
TEST_F(OutputAssemblerTest, EchoOpensTheTextAndLeadsTheLogprobs) {
  std::vector<int32_t> prompt = {0};  // BOS, which decodes to nothing
  for (int32_t id : Ids("Stop é here")) prompt.push_back(id);
  OutputAssembler a(*model_->tokenizer, false, false, {"here"}, static_cast<int32_t>(prompt.size()));
  a.Echo("Stop é here", prompt, /*score_only=*/false);
  GenerationChunk c;
  std::vector<int32_t> answer = Ids(" and on");
  c.token_ids = answer;
  for (size_t i = 1; i < prompt.size(); ++i) {
    engine::SampleResult r;
    r.token = prompt[i];
    r.logprob = -static_cast<float>(i);
    r.top_logprobs = {{42, -0.5f}};
    c.prompt_logprobs.push_back(r);
  }
  for (int32_t id : answer) {
    engine::SampleResult r;
    r.token = id;
    r.logprob = -0.25f;
    c.logprobs.push_back(r);
  }
  c.finish_reason = FinishReason::kLength;
  TextDelta d = a.OnChunk(c);
  EXPECT_EQ(d.content, "Stop é here and on");  // "here" in the prompt does not stop
  EXPECT_EQ(a.finish_reason(), FinishReason::kLength);
  EXPECT_EQ(a.usage().completion_tokens, static_cast<int32_t>(answer.size()));
  ASSERT_EQ(d.content_logprobs.size(), prompt.size() + answer.size());
  EXPECT_FALSE(d.content_logprobs[0].scored);
  EXPECT_EQ(d.content_logprobs[0].bytes, "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(d.content_logprobs[0].text_offset, 0);
  std::string bytes;
  for (size_t i = 1; i < prompt.size(); ++i) {
    const LogprobEntry& e = d.content_logprobs[i];
    EXPECT_TRUE(e.scored);
    EXPECT_EQ(e.logprob, -static_cast<float>(i));
    // Characters decoded before the token: BOS shows nothing, "é" is one (in two bytes).
    if (bytes.find("é") == std::string::npos) {
      EXPECT_EQ(e.text_offset, static_cast<int64_t>(bytes.size())) << i;
    }
    EXPECT_GE(e.text_offset, d.content_logprobs[i - 1].text_offset) << i;
    bytes += e.bytes;
    ASSERT_EQ(e.top.size(), 1u);
    EXPECT_EQ(e.top[0].second, -0.5f);
  }
  EXPECT_EQ(bytes, "Stop é here");
  // "Stop é here" is 11 characters (é is one, in two bytes).
  EXPECT_EQ(d.content_logprobs[prompt.size()].text_offset, 11);
  EXPECT_EQ(d.content_logprobs[prompt.size()].logprob, -0.25f);
}

TEST_F(OutputAssemblerTest, EchoWithoutMatchingPromptLogprobsHasTextOnly) {
  std::vector<int32_t> prompt = Ids("one two");
  OutputAssembler a(*model_->tokenizer, false, false, {}, static_cast<int32_t>(prompt.size()));
  a.Echo("one two", prompt, false);
  GenerationChunk c;
  c.token_ids = Ids("!");
  c.prompt_logprobs.resize(prompt.size() + 1);  // not one per prompt token after the first
  c.finish_reason = FinishReason::kStop;
  TextDelta d = a.OnChunk(c);
  EXPECT_EQ(d.content, "one two!");
  EXPECT_TRUE(d.content_logprobs.empty());
  // The backend failing before any chunk still opens the text with the prompt.
  OutputAssembler b(*model_->tokenizer, false, false, {}, static_cast<int32_t>(prompt.size()));
  b.Echo("one two", prompt, false);
  EXPECT_EQ(b.Finish(FinishReason::kCancelled).content, "one two");
}

TEST_F(OutputAssemblerTest, ScoreOnlyDropsTheGeneratedTokens) {
  std::vector<int32_t> prompt = Ids("a b c");
  OutputAssembler a(*model_->tokenizer, false, false, {}, static_cast<int32_t>(prompt.size()));
  a.Echo("a b c", prompt, /*score_only=*/true);
  GenerationChunk c;
  c.token_ids = Ids("zz");
  c.prompt_logprobs.resize(prompt.size() - 1);
  c.finish_reason = FinishReason::kStop;
  TextDelta d = a.OnChunk(c);
  EXPECT_EQ(d.content, "a b c");
  EXPECT_EQ(d.content_logprobs.size(), prompt.size());
  EXPECT_EQ(a.usage().completion_tokens, 0);
  EXPECT_EQ(a.finish_reason(), FinishReason::kLength);
}

// Completions show the hidden stop token's logprob as the last entry (usage does not count it);
// chat does not.
TEST_F(OutputAssemblerTest, CompletionsShowTheStopTokensLogprob) {
  for (bool completion : {true, false}) {
    OutputAssembler a(*model_->tokenizer, false, false, {}, 3);
    if (completion) a.ReportStopToken();
    GenerationChunk c;
    c.token_ids = Ids("ok");
    for (int32_t id : c.token_ids) {
      engine::SampleResult r;
      r.token = id;
      c.logprobs.push_back(r);
    }
    engine::SampleResult eos;
    eos.token = 1;
    eos.logprob = -0.75f;
    c.stop_logprob = eos;
    c.finish_reason = FinishReason::kStop;
    TextDelta d = a.OnChunk(c);
    EXPECT_EQ(d.content, "ok");
    EXPECT_EQ(a.usage().completion_tokens, static_cast<int32_t>(c.token_ids.size()));
    ASSERT_EQ(d.content_logprobs.size(), c.token_ids.size() + (completion ? 1 : 0)) << completion;
    if (completion) {
      EXPECT_EQ(d.content_logprobs.back().logprob, -0.75f);
      EXPECT_EQ(d.content_logprobs.back().bytes, "<｜end▁of▁sentence｜>");
      EXPECT_EQ(d.content_logprobs.back().text_offset, 2);
    }
  }
}

TEST_F(OutputAssemblerTest, CachedTokensAreClampedToThePrompt) {
  OutputAssembler a(*model_->tokenizer, false, false, {}, 5);
  GenerationChunk c;
  c.cached_prompt_tokens = 99;
  a.OnChunk(c);
  EXPECT_EQ(a.usage().cached_tokens, 5);
}

}  // namespace
}  // namespace moeserve::gateway
