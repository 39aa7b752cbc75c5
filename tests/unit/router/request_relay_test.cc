#include "router/request_relay.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/unit/router/fake_worker.h"

namespace moeserve::router {
namespace {

using testing::FakeSequence;
using testing::FakeWorkerClient;
using testing::kFakeCachedPromptTokens;

// Prefill workers 0 and 1, decode workers 2 and 3, all fakes; the relay runs on the test thread.
class RequestRelayTest : public ::testing::Test {
 protected:
  RequestRelayTest() {
    registry_ = std::make_unique<WorkerRegistry>(
        std::vector<WorkerEndpoint>{
            {"p0:1", true, false}, {"p1:1", true, false}, {"d2:1", false, true}, {"d3:1", false, true}},
        [this](const WorkerEndpoint&) {
          fakes_.push_back(std::make_shared<FakeWorkerClient>());
          return fakes_.back();
        },
        RegistryOptions(), &clock_);
    RelayOptions options;
    options.prefill.block_tokens = 4;
    options.prefill.load_cost_tokens = 4;
    options.retry_attempts = 2;
    relay_ = std::make_unique<RequestRelay>(registry_.get(), options, &clock_);
  }

  static v1::GenerationSpec Spec(int prompt_len, int max_new_tokens) {
    v1::GenerationSpec spec;
    spec.set_request_id("r");
    for (int i = 0; i < prompt_len; ++i) spec.add_prompt_ids(10 + i);
    spec.set_max_new_tokens(max_new_tokens);
    return spec;
  }

  struct Result {
    absl::Status status;
    std::vector<v1::RouteChunk> chunks;
    std::vector<int32_t> tokens;
  };

  Result Run(const v1::GenerationSpec& spec, CallOptions options = {}) {
    Result r;
    r.status = relay_->Run(spec, options, [&](v1::RouteChunk chunk) {
      r.tokens.insert(r.tokens.end(), chunk.token_ids().begin(), chunk.token_ids().end());
      r.chunks.push_back(std::move(chunk));
    });
    return r;
  }

  moeserve::testing::FakeClock clock_;
  std::vector<std::shared_ptr<FakeWorkerClient>> fakes_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<RequestRelay> relay_;
};

TEST_F(RequestRelayTest, PrefillThenDecodeGivesTheFullSequence) {
  v1::GenerationSpec spec = Spec(9, 6);
  Result r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, FakeSequence(spec));
  EXPECT_EQ(r.chunks.front().cached_prompt_tokens(), kFakeCachedPromptTokens);
  EXPECT_EQ(r.chunks.back().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(fakes_[0]->prefill_calls(), 1);
  ASSERT_EQ(fakes_[2]->decode_requests().size(), 1u);
  EXPECT_EQ(fakes_[2]->decode_requests()[0].spec().generated_ids_size(), 1);
}

TEST_F(RequestRelayTest, FinishedAtPrefillSkipsDecode) {
  v1::GenerationSpec spec = Spec(3, 1);
  Result r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, FakeSequence(spec));
  EXPECT_TRUE(fakes_[2]->decode_requests().empty());
  EXPECT_TRUE(fakes_[3]->decode_requests().empty());
}

// A sampled stop token is never relayed as a token, but its logprob rides on the last chunk,
// whether the prefill or the decode sampled it.
TEST_F(RequestRelayTest, StopTokenLogprobRidesOnTheLastChunk) {
  for (int stop_at : {0, 3}) {
    for (const std::shared_ptr<FakeWorkerClient>& f : fakes_) f->StopAt(stop_at);
    v1::GenerationSpec spec = Spec(5, 8);
    Result r = Run(spec);
    ASSERT_TRUE(r.status.ok()) << r.status;
    std::vector<int32_t> want = FakeSequence(spec);
    want.resize(stop_at);
    EXPECT_EQ(r.tokens, want) << stop_at;
    ASSERT_FALSE(r.chunks.empty());
    const v1::RouteChunk& last = r.chunks.back();
    EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_STOP) << stop_at;
    ASSERT_TRUE(last.has_stop_logprob()) << stop_at;
    EXPECT_EQ(last.stop_logprob().token_id(), testing::kFakeStopToken);
    EXPECT_EQ(last.stop_logprob().logprob(), testing::kFakeStopLogprob);
    for (size_t i = 0; i + 1 < r.chunks.size(); ++i) EXPECT_FALSE(r.chunks[i].has_stop_logprob());
  }
}

TEST_F(RequestRelayTest, RejectsBadSpec) {
  EXPECT_EQ(Run(Spec(0, 4)).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Run(Spec(4, 0)).status.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RequestRelayTest, RetriesUnavailablePrefillElsewhere) {
  fakes_[0]->FailPrefill({absl::UnavailableError("gone")});
  v1::GenerationSpec spec = Spec(5, 4);
  Result r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, FakeSequence(spec));
  EXPECT_EQ(fakes_[0]->prefill_calls(), 1);
  EXPECT_EQ(fakes_[1]->prefill_calls(), 1);
  EXPECT_FALSE(registry_->Snapshot()[0].healthy);  // reported until the next successful poll
}

TEST_F(RequestRelayTest, DoesNotRetryInvalidArgument) {
  fakes_[0]->FailPrefill({absl::InvalidArgumentError("prompt too long")});
  Result r = Run(Spec(5, 4));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fakes_[1]->prefill_calls(), 0);
  EXPECT_TRUE(r.chunks.empty());
}

TEST_F(RequestRelayTest, NoPrefillWorkerLeftIsUnavailableWithLastError) {
  fakes_[0]->FailPrefill({absl::UnavailableError("p0 down")});
  fakes_[1]->FailPrefill({absl::DeadlineExceededError("p1 slow")});
  Result r = Run(Spec(5, 4));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("no eligible prefill worker"), absl::string_view::npos);
  EXPECT_NE(r.status.message().find("p1 slow"), absl::string_view::npos);
}

TEST_F(RequestRelayTest, MigratesDecodeWithoutLosingOrRepeatingTokens) {
  fakes_[2]->FailDecodeAfter(3, absl::UnavailableError("connection lost"));
  v1::GenerationSpec spec = Spec(9, 10);
  Result r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, FakeSequence(spec));
  std::vector<v1::DecodeRequest> requests = fakes_[3]->decode_requests();
  ASSERT_EQ(requests.size(), 1u);
  // The new worker got every token relayed so far: 1 from prefill + 3 from the first decode.
  const v1::GenerationSpec& resumed = requests[0].spec();
  EXPECT_EQ(std::vector<int32_t>(resumed.generated_ids().begin(), resumed.generated_ids().end()),
            std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + 4));
}

TEST_F(RequestRelayTest, StreamEndingWithoutFinishIsMigrated) {
  fakes_[2]->FailDecodeAfter(2, absl::OkStatus());
  v1::GenerationSpec spec = Spec(9, 8);
  Result r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, FakeSequence(spec));
}

TEST_F(RequestRelayTest, DecodeFailureOnEveryWorkerIsUnavailable) {
  fakes_[2]->FailDecodeAfter(1, absl::UnavailableError("d2 down"));
  fakes_[3]->FailDecodeAfter(1, absl::UnavailableError("d3 down"));
  v1::GenerationSpec spec = Spec(9, 8);
  Result r = Run(spec);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("d3 down"), absl::string_view::npos);
  // What was relayed is still a prefix of the true sequence.
  std::vector<int32_t> want = FakeSequence(spec);
  ASSERT_EQ(r.tokens.size(), 3u);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(want.begin(), want.begin() + 3));
}

TEST_F(RequestRelayTest, EnforcesMaxNewTokensAcrossHops) {
  fakes_[2]->OvershootDecode(3);
  v1::GenerationSpec spec = Spec(4, 5);
  Result r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, FakeSequence(spec));
  EXPECT_EQ(r.chunks.back().finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(RequestRelayTest, ResumedRequestCountsGivenTokens) {
  v1::GenerationSpec spec = Spec(4, 5);
  std::vector<int32_t> want = FakeSequence(spec);
  spec.add_generated_ids(want[0]);
  spec.add_generated_ids(want[1]);
  Result r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, std::vector<int32_t>(want.begin() + 2, want.end()));
}

TEST_F(RequestRelayTest, CancelledRequestStops) {
  CancelToken token;
  token.Cancel();
  CallOptions options;
  options.cancel = &token;
  Result r = Run(Spec(4, 5), options);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(fakes_[0]->prefill_calls(), 0);
}

TEST_F(RequestRelayTest, PassedDeadlineIsDeadlineExceeded) {
  CallOptions options;
  options.deadline = clock_.Now();
  EXPECT_EQ(Run(Spec(4, 5), options).status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(RequestRelayTest, SecondRequestFollowsTheCachedPrefix) {
  // Worker 0 is busy, so the first request goes to worker 1, which records the prompt's blocks.
  fakes_[0]->SetLoad(1, 0, 10);
  registry_->PollOnce();
  v1::GenerationSpec spec = Spec(16, 2);  // 4 blocks of 4 tokens
  ASSERT_TRUE(Run(spec).status.ok());
  EXPECT_EQ(fakes_[1]->prefill_calls(), 1);
  EXPECT_EQ(relay_->LookupPrefix(spec).at(1), 4);
  // With equal loads, the lower id would win on a tie; the cached prefix wins instead.
  fakes_[0]->SetLoad(0, 0, 10);
  registry_->PollOnce();
  ASSERT_TRUE(Run(spec).status.ok());
  EXPECT_EQ(fakes_[1]->prefill_calls(), 2);
  EXPECT_EQ(fakes_[0]->prefill_calls(), 0);
  // A different prompt has no prefix anywhere and goes to the lowest id.
  ASSERT_TRUE(Run(Spec(3, 2)).status.ok());
  EXPECT_EQ(fakes_[0]->prefill_calls(), 1);
}

}  // namespace
}  // namespace moeserve::router
