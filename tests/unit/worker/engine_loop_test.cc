// Regression tests for worker/engine_loop.cc from inputs the Worker fuzz target
// (tests/fuzz/worker_grpc_fuzzer.cc) found: a generation never yields more than max_new_tokens
// (which counts the generated_ids a spec resumes from).
#include "worker/engine_loop.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fake_kv_cache_client.h"
#include "tests/testing/tiny_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::worker {
namespace {

// Collects a job's events; Wait returns once the last one arrived. Its lock is common/mutex.h's
// (not absl::Mutex) so ThreadSanitizer sees the hand-over from the engine thread (tsan job).
class CollectingSink final : public JobSink {
 public:
  void OnEvent(JobEvent event) override {
    {
      MutexLock lock(&mu_);
      // Nothing may follow a job's last event.
      if (done_) ++after_done_;
      tokens_.insert(tokens_.end(), event.tokens.begin(), event.tokens.end());
      if (events_++ == 0) {
        cached_tokens_ = event.cached_tokens;
        prompt_logprobs_ = std::move(event.prompt_logprobs);
      } else if (!event.prompt_logprobs.empty()) {
        ++misplaced_prompt_logprobs_;
      }
      if (!event.error.ok()) error_ = event.error;
      logprobs_.insert(logprobs_.end(), event.logprobs.begin(), event.logprobs.end());
      if (event.stop_logprob) stop_logprob_ = event.stop_logprob;
      if (event.finish != Finish::kNone) finish_ = event.finish;
      done_ = done_ || event.done;
    }
    cv_.NotifyAll();
  }
  // False when the job did not end within a generous bound (a hang).
  bool Wait() {
    MutexLock lock(&mu_);
    return cv_.WaitWithTimeout(&mu_, absl::Seconds(120),
                               [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; });
  }
  std::vector<int32_t> tokens() {
    MutexLock lock(&mu_);
    return tokens_;
  }
  Finish finish() {
    MutexLock lock(&mu_);
    return finish_;
  }

  absl::Status error() {
    MutexLock lock(&mu_);
    return error_;
  }
  int events_after_done() {
    MutexLock lock(&mu_);
    return after_done_;
  }
  // The first event's.
  int64_t cached_tokens() {
    MutexLock lock(&mu_);
    return cached_tokens_;
  }
  std::vector<engine::SampleResult> prompt_logprobs() {
    MutexLock lock(&mu_);
    return prompt_logprobs_;
  }
  std::vector<engine::SampleResult> logprobs() {
    MutexLock lock(&mu_);
    return logprobs_;
  }
  std::optional<engine::SampleResult> stop_logprob() {
    MutexLock lock(&mu_);
    return stop_logprob_;
  }
  // Events after the first that carried prompt logprobs (there must be none).
  int misplaced_prompt_logprobs() {
    MutexLock lock(&mu_);
    return misplaced_prompt_logprobs_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<int32_t> tokens_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  Finish finish_ ABSL_GUARDED_BY(mu_) = Finish::kNone;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  int after_done_ ABSL_GUARDED_BY(mu_) = 0;
  int events_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t cached_tokens_ ABSL_GUARDED_BY(mu_) = -1;
  std::vector<engine::SampleResult> prompt_logprobs_ ABSL_GUARDED_BY(mu_);
  int misplaced_prompt_logprobs_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<engine::SampleResult> logprobs_ ABSL_GUARDED_BY(mu_);
  std::optional<engine::SampleResult> stop_logprob_ ABSL_GUARDED_BY(mu_);
};

class EngineLoopTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::TempDir("engine_loop"));
    ASSERT_TRUE(cli::WriteRandomCheckpoint(testing::SmallConfig(), *dir_, 21, false).ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    engine::ModelOptions mo;
    mo.compute = engine::ComputeDType::kF32;
    mo.threads = 1;
    absl::StatusOr<std::unique_ptr<engine::Model>> m = engine::Model::Load(*dir_, mo);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    LoopOptions lo;
    lo.engine.block_tokens = 4;
    lo.engine.kv_cache_tokens = 512;
    loop_ = std::make_unique<EngineLoop>(model_.get(), nullptr, nullptr, lo);
  }

  // The fuzzer's Decode input: prompt [0, 3, 5] resuming from one generated token, a budget
  // of 4 tokens in all, a thinking budget of 3 whose close is the two tokens [6, 7].
  static JobSpec FuzzSpec() {
    JobSpec s;
    s.request_id = "fuzz";
    s.prompt = {0, 3, 5};
    s.generated = {9};
    s.sampling.repetition_penalty = 1.2;
    s.sampling.stop_token_ids = {1};
    s.max_new_tokens = 4;
    s.thinking_budget = 3;
    s.think_close_ids = {6, 7};
    s.sample_vocab = 300;
    return s;
  }

  static std::string* dir_;
  std::unique_ptr<engine::Model> model_;
  std::unique_ptr<EngineLoop> loop_;
};

std::string* EngineLoopTest::dir_ = nullptr;

// The thinking budget's close tokens were appended whole, past max_new_tokens: the fuzzer saw 4
// tokens streamed where 3 were left.
TEST_F(EngineLoopTest, ThinkingBudgetCloseStopsAtMaxNewTokens) {
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(loop_->Submit(FuzzSpec(), std::make_shared<JobControl>(), sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_LE(sink->tokens().size(), 3u);
  EXPECT_NE(sink->finish(), Finish::kNone);
}

// A thinking budget of 0 closes reasoning before the first sampled token, and that close counts
// against max_new_tokens: the fuzzer saw a Decode with max_new_tokens 1 stream the close and then
// a sampled token.
TEST_F(EngineLoopTest, ForcedCloseAtTheStartCountsAgainstMaxNewTokens) {
  for (int32_t max_new : {1, 2, 3}) {
    JobSpec spec = FuzzSpec();
    spec.generated.clear();
    spec.thinking_budget = 0;
    spec.max_new_tokens = max_new;
    spec.ignore_eos = true;
    spec.sampling.stop_token_ids.clear();
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), sink).ok());
    ASSERT_TRUE(sink->Wait());
    ASSERT_TRUE(sink->error().ok()) << sink->error();
    EXPECT_EQ(sink->finish(), Finish::kLength) << max_new;
    ASSERT_EQ(sink->tokens().size(), static_cast<size_t>(max_new));
    const std::vector<int32_t> close = {6, 7};
    for (size_t i = 0; i < std::min<size_t>(2, sink->tokens().size()); ++i) {
      EXPECT_EQ(sink->tokens()[i], close[i]) << max_new;
    }
  }
}

// A resumed spec whose generated_ids already fill max_new_tokens got one more token; it is now
// refused up front.
TEST_F(EngineLoopTest, RejectsASpecWithNoTokensLeft) {
  JobSpec spec = FuzzSpec();
  spec.thinking_budget = -1;
  spec.think_close_ids.clear();
  spec.max_new_tokens = 1;
  absl::Status s = loop_->Submit(spec, std::make_shared<JobControl>(),
                                 std::make_shared<CollectingSink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  spec.generated = {9, 9, 9, 9, 9, 9};
  spec.max_new_tokens = 4;
  s = loop_->Submit(spec, std::make_shared<JobControl>(), std::make_shared<CollectingSink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

// The fuzzer's Prefill input: a thinking budget of 0 (proto3's default) whose close token is
// outside the 384-token vocabulary; the worker streamed id 21629 back.
TEST_F(EngineLoopTest, RejectsThinkCloseIdsOutsideTheVocabulary) {
  JobSpec spec;
  spec.request_id = "r1";
  spec.prompt = {50, 48, 50, 54, 44};
  spec.max_new_tokens = 4;
  spec.ignore_eos = true;
  spec.thinking_budget = 0;
  spec.think_close_ids = {21629};
  spec.prefill_only = true;
  absl::Status s = loop_->Submit(spec, std::make_shared<JobControl>(),
                                 std::make_shared<CollectingSink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  spec.think_close_ids = {-1};
  s = loop_->Submit(spec, std::make_shared<JobControl>(), std::make_shared<CollectingSink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

// Prompt scoring (completions' echo with logprobs): the first event scores every prompt token
// after the first with the model's own distribution, over the ids below sample_vocab, as a
// separate engine computes it from each prefix; such a job runs its whole prompt (no cached
// prefix), while the same prompt without scoring imports the blocks the first one published.
TEST_F(EngineLoopTest, PromptLogprobsScoreEveryPromptTokenWithoutTheCache) {
  testing::FakeKvCacheClient kv;
  LoopOptions lo;
  lo.engine.block_tokens = 4;
  lo.engine.kv_cache_tokens = 512;
  lo.engine.max_logit_rows = 6;
  auto loop = std::make_unique<EngineLoop>(model_.get(), nullptr, &kv, lo);
  JobSpec spec;
  spec.request_id = "score";
  for (int i = 0; i < 23; ++i) spec.prompt.push_back((i * 29 + 3) % 384);
  spec.max_new_tokens = 2;
  spec.sample_vocab = 300;
  spec.prefill_only = true;
  spec.prompt_logprobs = 21;
  absl::Status bad = loop->Submit(spec, std::make_shared<JobControl>(),
                                  std::make_shared<CollectingSink>());
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  spec.prompt_logprobs = 3;
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (bool score : {true, true, false}) {
    JobSpec s = spec;
    if (!score) s.prompt_logprobs.reset();
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(loop->Submit(s, std::make_shared<JobControl>(), sinks.back()).ok());
    ASSERT_TRUE(sinks.back()->Wait());
    ASSERT_TRUE(sinks.back()->error().ok()) << sinks.back()->error();
    EXPECT_EQ(sinks.back()->misplaced_prompt_logprobs(), 0);
  }
  EXPECT_EQ(sinks[0]->cached_tokens(), 0);
  EXPECT_EQ(sinks[1]->cached_tokens(), 0);   // published by the first, yet not imported
  EXPECT_EQ(sinks[2]->cached_tokens(), 20);  // the control: 5 full blocks of 4
  EXPECT_TRUE(sinks[2]->prompt_logprobs().empty());
  EXPECT_EQ(sinks[0]->tokens(), sinks[2]->tokens());
  loop.reset();  // the model is free for the reference

  std::vector<engine::SampleResult> got = sinks[0]->prompt_logprobs();
  ASSERT_EQ(got.size(), spec.prompt.size() - 1);
  engine::EngineOptions eo;
  eo.kv_cache_tokens = 512;
  for (size_t p = 0; p + 1 < spec.prompt.size(); ++p) {
    engine::Engine e(model_.get(), eo);
    std::vector<int32_t> prefix(spec.prompt.begin(), spec.prompt.begin() + p + 1);
    engine::SeqId seq = *e.Add(prefix);
    std::vector<float> logits;
    while (logits.empty()) {
      absl::StatusOr<std::vector<engine::StepOutput>> out = e.Step();
      ASSERT_TRUE(out.ok()) << out.status();
      for (engine::StepOutput& o : *out) {
        if (o.seq == seq) logits = std::move(o.logits);
      }
    }
    logits.resize(300);
    engine::SampleResult want = engine::ScoreToken(logits, spec.prompt[p + 1], 3);
    EXPECT_EQ(got[p].token, spec.prompt[p + 1]) << p;
    EXPECT_EQ(got[p].logprob, want.logprob) << p;
    ASSERT_EQ(got[p].top_logprobs.size(), 3u) << p;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(got[p].top_logprobs[i].token, want.top_logprobs[i].token) << p;
      EXPECT_EQ(got[p].top_logprobs[i].logprob, want.top_logprobs[i].logprob) << p;
    }
  }
  EXPECT_EQ(sinks[1]->prompt_logprobs().size(), got.size());
  EXPECT_EQ(sinks[1]->prompt_logprobs()[5].logprob, got[5].logprob);
}

// A sampled stop token ends the job without being a token, and its logprob comes with the last
// event (the legacy completions API shows it): the same value the token had when it was not a
// stop token.
TEST_F(EngineLoopTest, SampledStopTokenReportsItsLogprob) {
  JobSpec spec;
  spec.request_id = "stop";
  spec.prompt = {4, 8, 15, 16, 23, 42};
  spec.max_new_tokens = 3;
  spec.ignore_eos = true;
  spec.sampling.temperature = 0.0;
  spec.sampling.logprobs = true;
  spec.sampling.top_logprobs = 2;
  auto free_run = std::make_shared<CollectingSink>();
  ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), free_run).ok());
  ASSERT_TRUE(free_run->Wait());
  ASSERT_EQ(free_run->tokens().size(), 3u);
  EXPECT_FALSE(free_run->stop_logprob().has_value());
  const engine::SampleResult second = free_run->logprobs()[1];

  spec.sampling.stop_token_ids = {free_run->tokens()[1]};
  auto stopped = std::make_shared<CollectingSink>();
  ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), stopped).ok());
  ASSERT_TRUE(stopped->Wait());
  EXPECT_EQ(stopped->finish(), Finish::kStop);
  EXPECT_EQ(stopped->tokens(), std::vector<int32_t>{free_run->tokens()[0]});
  ASSERT_TRUE(stopped->stop_logprob().has_value());
  EXPECT_EQ(stopped->stop_logprob()->token, second.token);
  EXPECT_EQ(stopped->stop_logprob()->logprob, second.logprob);
  EXPECT_EQ(stopped->stop_logprob()->top_logprobs.size(), 2u);

  spec.sampling.logprobs = false;  // not asked for: none
  spec.sampling.top_logprobs = 0;
  auto quiet = std::make_shared<CollectingSink>();
  ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), quiet).ok());
  ASSERT_TRUE(quiet->Wait());
  EXPECT_EQ(quiet->finish(), Finish::kStop);
  EXPECT_FALSE(quiet->stop_logprob().has_value());
}

// The loop's hand-over between threads (the tsan job runs this): four threads submit jobs at
// once while another reads Load() and every third job is cancelled right after its Submit, over
// a model whose layers run on a two-thread pool and a KV pool small enough to preempt. Every job
// ends exactly once (nothing is delivered after its last event): a cancelled one as cancelled
// (or finished, when the cancel came too late), the others with all their tokens.
TEST_F(EngineLoopTest, ConcurrentSubmittersCancelsAndLoadReaders) {
  engine::ModelOptions mo;
  mo.compute = engine::ComputeDType::kF32;
  mo.threads = 2;
  absl::StatusOr<std::unique_ptr<engine::Model>> model = engine::Model::Load(*dir_, mo);
  ASSERT_TRUE(model.ok()) << model.status();
  LoopOptions lo;
  lo.engine.block_tokens = 4;
  lo.engine.kv_cache_tokens = 128;
  auto loop = std::make_unique<EngineLoop>(model->get(), nullptr, nullptr, lo);

  constexpr int kThreads = 4;
  constexpr int kJobsEach = 6;
  constexpr int64_t kTokens = 8;
  struct Submitted {
    std::shared_ptr<JobControl> control;
    std::shared_ptr<CollectingSink> sink;
    bool cancelled = false;
  };
  std::vector<std::vector<Submitted>> jobs(kThreads);  // jobs[t]: written by thread t only
  std::atomic<bool> done_reading{false};
  std::thread reader([&] {
    while (!done_reading.load()) {
      const LoadSnapshot l = loop->Load();
      EXPECT_GE(l.kv_blocks_free, 0);
      EXPECT_LE(l.kv_blocks_free, l.kv_blocks_total);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int j = 0; j < kJobsEach; ++j) {
        JobSpec spec;
        spec.request_id = absl::StrCat("c", t, "-", j);
        spec.prompt = {10 + t, 20 + j, 30, 40, 50};
        spec.max_new_tokens = kTokens;
        spec.ignore_eos = true;
        Submitted s{std::make_shared<JobControl>(), std::make_shared<CollectingSink>(), j % 3 == 2};
        EXPECT_TRUE(loop->Submit(spec, s.control, s.sink).ok());
        if (s.cancelled) s.control->cancelled.store(true);
        jobs[t].push_back(std::move(s));
      }
    });
  }
  for (std::thread& s : submitters) s.join();
  for (int t = 0; t < kThreads; ++t) {
    for (size_t j = 0; j < jobs[t].size(); ++j) {
      const Submitted& s = jobs[t][j];
      SCOPED_TRACE(absl::StrCat("job c", t, "-", j));
      ASSERT_TRUE(s.sink->Wait());
      EXPECT_EQ(s.sink->events_after_done(), 0);
      EXPECT_TRUE(s.sink->error().ok()) << s.sink->error();
      if (s.cancelled && s.sink->finish() == Finish::kCancelled) continue;
      EXPECT_EQ(s.sink->finish(), Finish::kLength);
      EXPECT_EQ(static_cast<int64_t>(s.sink->tokens().size()), kTokens);
    }
  }
  done_reading.store(true);
  reader.join();
}

// Structured output over a synthetic vocabulary for the 384-token model: id 1 ends (EOS), ids
// 2..96 are the printable ASCII bytes, a few more are multi-byte JSON pieces, the rest are never
// allowed. Whatever the random model prefers, the answer must be a document the schema accepts,
// checked here with nlohmann's parser and by hand.
class ConstrainedLoopTest : public EngineLoopTest {
 protected:
  void SetUp() override {
    EngineLoopTest::SetUp();
    std::vector<std::string> bytes(384);
    for (int c = 0x20; c < 0x7f; ++c) bytes[static_cast<size_t>(c - 0x20 + 2)] = std::string(1, static_cast<char>(c));
    const std::vector<std::string> pieces = {"{\"", "\":", "\",\"", "true", "false", "null", "12",
                                             "\n  ", "\"}", "ab", "\xc3\xa9", "\\u00e9"};
    for (size_t i = 0; i < pieces.size(); ++i) bytes[100 + i] = pieces[i];
    bytes_ = bytes;
    LoopOptions lo;
    lo.engine.block_tokens = 4;
    lo.engine.kv_cache_tokens = 2048;
    lo.vocabulary = std::make_shared<engine::grammar::Vocabulary>(bytes, 1);
    loop_ = std::make_unique<EngineLoop>(model_.get(), nullptr, nullptr, lo);
  }

  static JobSpec Spec(uint64_t seed) {
    JobSpec s;
    s.request_id = absl::StrCat("c", seed);
    s.prompt = {0, 40, 41, 42};
    s.sampling.temperature = 1.0;
    s.sampling.seed = seed;
    s.max_new_tokens = 400;
    s.response_schema = kSchema;
    return s;
  }

  std::string Text(const std::vector<int32_t>& tokens) const {
    std::string out;
    for (int32_t t : tokens) {
      if (t != 1) out += bytes_[static_cast<size_t>(t)];
    }
    return out;
  }

  static void ExpectValid(const std::string& text) {
    nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << text;
    ASSERT_TRUE(doc.is_object()) << text;
    ASSERT_TRUE(doc.contains("k") && doc["k"].is_string()) << text;
    int code_points = 0;  // maxLength counts characters, not bytes
    for (char c : doc["k"].get<std::string>()) code_points += (c & 0xC0) != 0x80;
    ASSERT_LE(code_points, 6) << text;
    ASSERT_TRUE(doc.contains("n") && doc["n"].is_number_integer()) << text;
    for (auto& [key, value] : doc.items()) {
      (void)value;
      ASSERT_TRUE(key == "k" || key == "n" || key == "b") << text;
    }
    if (doc.contains("b")) {
      ASSERT_TRUE(doc["b"].is_boolean() || doc["b"].is_null()) << text;
    }
  }

  static constexpr const char* kSchema =
      R"({"type":"object","properties":{"k":{"type":"string","maxLength":6},"n":{"type":"integer"},)"
      R"("b":{"type":["boolean","null"]}},"required":["k","n"],"additionalProperties":false})";
  std::vector<std::string> bytes_;
};

TEST_F(ConstrainedLoopTest, EveryAnswerMatchesTheSchema) {
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(loop_->Submit(Spec(seed), std::make_shared<JobControl>(), sink).ok());
    ASSERT_TRUE(sink->Wait());
    ASSERT_TRUE(sink->error().ok()) << sink->error();
    EXPECT_EQ(sink->finish(), Finish::kStop) << Text(sink->tokens());
    ExpectValid(Text(sink->tokens()));
  }
}

// The constraint starts after constraint_after_token; what came before (the reasoning) is free,
// and a resumed job replays its generated tokens through the constraint.
TEST_F(ConstrainedLoopTest, StartsAfterTheTriggerAndResumes) {
  JobSpec spec = Spec(9);
  spec.constraint_after_token = 300;  // never allowed inside the answer: only a trigger
  spec.generated = {250, 251, 300, 100, 2 + ('k' - 0x20), 101};  // free, trigger, `{"k":`
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), sink).ok());
  ASSERT_TRUE(sink->Wait());
  ASSERT_TRUE(sink->error().ok()) << sink->error();
  EXPECT_EQ(sink->finish(), Finish::kStop);
  ExpectValid(Text({100, 2 + ('k' - 0x20), 101}) + Text(sink->tokens()));

  // A resumed answer that already broke the schema is refused, not continued.
  spec.generated = {300, 2 + ('[' - 0x20)};
  sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->error().code(), absl::StatusCode::kFailedPrecondition) << sink->error();
  EXPECT_TRUE(sink->tokens().empty());
}

// With a thinking budget of 0 the worker itself writes the trigger (the reasoning close) before
// the first sampled token; the constraint must start there too. It never started: the answer
// came out unconstrained.
TEST_F(ConstrainedLoopTest, ForcedCloseAtTheStartStartsTheConstraint) {
  JobSpec spec = Spec(5);
  spec.constraint_after_token = 300;
  spec.thinking_budget = 0;
  spec.think_close_ids = {300};
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), sink).ok());
  ASSERT_TRUE(sink->Wait());
  ASSERT_TRUE(sink->error().ok()) << sink->error();
  EXPECT_EQ(sink->finish(), Finish::kStop);
  const std::vector<int32_t> tokens = sink->tokens();
  ASSERT_FALSE(tokens.empty());
  EXPECT_EQ(tokens[0], 300);
  // Every later token is one the constraint can allow (printable bytes and JSON pieces; the
  // EOS that stopped it is not streamed): an unconstrained model picks ids whose text is empty,
  // which Text() would hide.
  for (size_t i = 1; i < tokens.size(); ++i) {
    EXPECT_TRUE(tokens[i] >= 2 && tokens[i] < 112) << "token " << i << ": " << tokens[i];
  }
  ExpectValid(Text(std::vector<int32_t>(tokens.begin() + 1, tokens.end())));
}

TEST_F(ConstrainedLoopTest, BadSchemasAndMissingVocabularyAreRefused) {
  JobSpec spec = Spec(1);
  spec.response_schema = R"({"type":"string","pattern":"x"})";
  absl::Status s = loop_->Submit(spec, std::make_shared<JobControl>(), std::make_shared<CollectingSink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  LoopOptions plain;
  plain.engine.block_tokens = 4;
  plain.engine.kv_cache_tokens = 512;
  EngineLoop no_vocab(model_.get(), nullptr, nullptr, plain);
  s = no_vocab.Submit(Spec(1), std::make_shared<JobControl>(), std::make_shared<CollectingSink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

// tool_choice "required": markup ids (300..304, which have no bytes, like a model's added tokens)
// are forced, the arguments follow the function's schema, and the answer ends with close + EOS.
TEST_F(ConstrainedLoopTest, ForcedToolCallsFollowTheGrammar) {
  auto ascii = [](const std::string& text) {
    std::vector<int32_t> ids;
    for (char c : text) ids.push_back(2 + (c - 0x20));
    return ids;
  };
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    JobSpec spec = Spec(seed);
    spec.response_schema.clear();
    ToolCallSpec& t = spec.tool_calls.emplace();
    t.open = {300};
    std::vector<int32_t> head = {301};
    for (int32_t id : ascii("fn")) head.push_back(id);
    head.push_back(302);
    t.options.push_back({head, kSchema});
    t.tail = {303};
    t.separator = ascii(";");
    t.close = {304};
    t.parallel = seed != 1;
    spec.max_new_tokens = 1500;
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(loop_->Submit(spec, std::make_shared<JobControl>(), sink).ok());
    ASSERT_TRUE(sink->Wait());
    ASSERT_TRUE(sink->error().ok()) << sink->error();
    // Parallel calls may go on until the token limit (each call is still whole or cut short).
    const bool stopped = sink->finish() == Finish::kStop;
    if (!t.parallel) {
      EXPECT_TRUE(stopped);
    }
    // Read the calls back: 300, then (head, JSON, 303) separated by ';', then 304.
    std::vector<int32_t> out = sink->tokens();
    // Whitespace may come first (at most 4 tokens).
    size_t lead = 0;
    while (lead < out.size() && !bytes_[static_cast<size_t>(out[lead])].empty() &&
           bytes_[static_cast<size_t>(out[lead])].find_first_not_of(" \n") == std::string::npos) {
      ++lead;
    }
    EXPECT_LE(lead, 4u);
    out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(lead));
    ASSERT_GE(out.size(), 2u);
    EXPECT_EQ(out.front(), 300);
    if (stopped) {
      EXPECT_EQ(out.back(), 304) << "the EOS after close ends the job and is not delivered";
    }
    size_t i = 1, calls = 0;
    while (i < out.size() - (stopped ? 1 : 0)) {
      if (calls > 0) {
        ASSERT_EQ(out[i], ascii(";")[0]);
        ++i;
      }
      if (!stopped && out.size() - i < head.size() + 1) break;  // cut by the limit in the head
      ASSERT_TRUE(std::equal(head.begin(), head.end(), out.begin() + static_cast<std::ptrdiff_t>(i)));
      i += head.size();
      size_t end = i;
      while (end < out.size() && out[end] != 303) ++end;
      if (end == out.size() && !stopped) break;  // cut by the limit inside a call
      ASSERT_LT(end, out.size());
      ExpectValid(Text(std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(i),
                                            out.begin() + static_cast<std::ptrdiff_t>(end))));
      i = end + 1;
      ++calls;
    }
    EXPECT_GE(calls, 1u);
    if (!t.parallel) {
      EXPECT_EQ(calls, 1u);
    }
  }
  JobSpec both = Spec(1);
  both.tool_calls.emplace().options.push_back({{301}, kSchema});
  absl::Status s = loop_->Submit(both, std::make_shared<JobControl>(), std::make_shared<CollectingSink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

}  // namespace
}  // namespace moeserve::worker
