// Regression tests for worker/engine_loop.cc from inputs the Worker fuzz target
// (tests/fuzz/worker_grpc_fuzzer.cc) found: a generation never yields more than max_new_tokens
// (which counts the generated_ids a spec resumes from).
#include "worker/engine_loop.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/model.h"
#include "gtest/gtest.h"
#include "tests/testing/tiny_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::worker {
namespace {

// Collects a job's events; Wait returns once the last one arrived.
class CollectingSink final : public JobSink {
 public:
  void OnEvent(JobEvent event) override {
    absl::MutexLock lock(&mu_);
    tokens_.insert(tokens_.end(), event.tokens.begin(), event.tokens.end());
    if (!event.error.ok()) error_ = event.error;
    if (event.finish != Finish::kNone) finish_ = event.finish;
    done_ = done_ || event.done;
  }
  // False when the job did not end within a generous bound (a hang).
  bool Wait() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), absl::Seconds(120));
  }
  std::vector<int32_t> tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  Finish finish() {
    absl::MutexLock lock(&mu_);
    return finish_;
  }

 private:
  absl::Mutex mu_;
  std::vector<int32_t> tokens_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  Finish finish_ ABSL_GUARDED_BY(mu_) = Finish::kNone;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
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

}  // namespace
}  // namespace moeserve::worker
