// The router over real gRPC: fake Worker servers on 127.0.0.1 port 0, a RouterServer, and a Router
// client. Deterministic: the fakes' tokens depend only on (prompt, index), and every wait is on an
// event (a chunk read, a notification), never on time.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/grpc_channel.h"
#include "common/grpc_status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "moeserve/v1/router.grpc.pb.h"
#include "router/grpc_worker_client.h"
#include "router/router_server.h"
#include "tests/unit/router/fake_worker_server.h"

namespace moeserve::router {
namespace {

using testing::FakeSequence;
using testing::FakeWorkerServer;
using testing::kFakeCachedPromptTokens;

v1::GenerationSpec Spec(int prompt_len, int max_new_tokens) {
  v1::GenerationSpec spec;
  spec.set_request_id("it");
  for (int i = 0; i < prompt_len; ++i) spec.add_prompt_ids(1000 + 3 * i);
  spec.set_max_new_tokens(max_new_tokens);
  return spec;
}

struct Outcome {
  absl::Status status;
  std::vector<v1::RouteChunk> chunks;
  std::vector<int32_t> tokens;
};

class RouterIntegrationTest : public ::testing::Test {
 protected:
  // Workers: `prefill` prefill-only fakes, then `decode` decode-only fakes.
  void StartCluster(int prefill, int decode) {
    RouterConfig config;
    config.port = 0;
    config.host = "127.0.0.1";
    config.relay.prefill.block_tokens = 4;
    config.relay.retry_attempts = 2;
    config.relay_threads = 4;
    for (int i = 0; i < prefill + decode; ++i) {
      workers_.push_back(std::make_unique<FakeWorkerServer>());
      ASSERT_TRUE(workers_.back()->ok());
      (i < prefill ? config.prefill : config.decode).push_back(workers_.back()->address());
    }
    StartRouter(std::move(config));
  }

  void StartRouter(RouterConfig config) {
    absl::StatusOr<std::unique_ptr<RouterServer>> router = RouterServer::Create(std::move(config));
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = *std::move(router);
    // Unlimited messages, as the gateway's channel: a scored prompt's first chunk is large.
    stub_ = v1::Router::NewStub(
        NewPeerChannel(absl::StrCat("127.0.0.1:", router_->Port()), /*unlimited_messages=*/true));
  }

  Outcome Generate(const v1::GenerationSpec& spec,
                   std::optional<std::chrono::system_clock::time_point> deadline = std::nullopt) {
    grpc::ClientContext context;
    if (deadline.has_value()) context.set_deadline(*deadline);
    v1::RouteRequest request;
    *request.mutable_spec() = spec;
    std::unique_ptr<grpc::ClientReader<v1::RouteChunk>> reader = stub_->Generate(&context, request);
    Outcome out;
    v1::RouteChunk chunk;
    while (reader->Read(&chunk)) {
      out.tokens.insert(out.tokens.end(), chunk.token_ids().begin(), chunk.token_ids().end());
      out.chunks.push_back(chunk);
    }
    out.status = FromGrpcStatus(reader->Finish());
    return out;
  }

  FakeWorkerServer& worker(int i) { return *workers_[i]; }

  std::vector<std::unique_ptr<FakeWorkerServer>> workers_;  // destroyed after the router
  std::unique_ptr<RouterServer> router_;
  std::unique_ptr<v1::Router::Stub> stub_;
};

TEST_F(RouterIntegrationTest, PrefillOnOneWorkerDecodeOnAnother) {
  StartCluster(1, 1);
  v1::GenerationSpec spec = Spec(10, 8);
  Outcome out = Generate(spec);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeSequence(spec));
  ASSERT_FALSE(out.chunks.empty());
  EXPECT_EQ(out.chunks.front().cached_prompt_tokens(), kFakeCachedPromptTokens);
  EXPECT_EQ(out.chunks.back().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(worker(0).service().prefill_calls(), 1);
  EXPECT_TRUE(worker(0).service().decode_requests().empty());
  ASSERT_EQ(worker(1).service().decode_requests().size(), 1u);
  EXPECT_EQ(worker(1).service().prefill_calls(), 0);
}

// A scored prompt: the prefill's prompt_logprobs ride on the first chunk, even when they pass
// gRPC's 4 MiB default message size (40 000 tokens with 20 alternatives, about 7 MB).
TEST_F(RouterIntegrationTest, PromptLogprobsRideOnTheFirstChunkWhateverTheirSize) {
  StartCluster(1, 1);
  v1::GenerationSpec spec = Spec(40000, 3);
  spec.set_prompt_logprobs(20);
  Outcome out = Generate(spec);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeSequence(spec));
  ASSERT_GE(out.chunks.size(), 2u);
  const v1::RouteChunk& first = out.chunks.front();
  ASSERT_GT(first.ByteSizeLong(), size_t{4} << 20);
  ASSERT_EQ(first.prompt_logprobs_size(), 39999);
  EXPECT_EQ(first.prompt_logprobs(0).token_id(), spec.prompt_ids(1));
  EXPECT_EQ(first.prompt_logprobs(39998).logprob(), -39999.0f);
  EXPECT_EQ(first.prompt_logprobs(7).top_logprobs_size(), 20);
  for (size_t i = 1; i < out.chunks.size(); ++i) {
    EXPECT_EQ(out.chunks[i].prompt_logprobs_size(), 0) << i;
  }
}

TEST_F(RouterIntegrationTest, UnavailablePrefillIsRetriedElsewhere) {
  StartCluster(2, 1);
  worker(0).service().FailPrefill(absl::UnavailableError("prefill worker draining"));
  v1::GenerationSpec spec = Spec(6, 5);
  Outcome out = Generate(spec);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeSequence(spec));
  // Worker 0 is tried first (equal load, lower id) and fails; worker 1 serves the request.
  EXPECT_EQ(worker(0).service().prefill_calls(), 1);
  EXPECT_EQ(worker(1).service().prefill_calls(), 1);
}

TEST_F(RouterIntegrationTest, DecodeWorkerDyingMidStreamIsMigrated) {
  StartCluster(1, 2);
  worker(1).service().FailDecodeAfter(3);
  v1::GenerationSpec spec = Spec(12, 12);
  Outcome out = Generate(spec);
  ASSERT_TRUE(out.status.ok()) << out.status;
  // No token lost or repeated: exactly the uninterrupted sequence.
  EXPECT_EQ(out.tokens, FakeSequence(spec));
  std::vector<v1::DecodeRequest> first = worker(1).service().decode_requests();
  std::vector<v1::DecodeRequest> second = worker(2).service().decode_requests();
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(first[0].spec().generated_ids_size(), 1);
  const auto& resumed = second[0].spec().generated_ids();
  EXPECT_EQ(std::vector<int32_t>(resumed.begin(), resumed.end()),
            std::vector<int32_t>(out.tokens.begin(), out.tokens.begin() + 4));
}

TEST_F(RouterIntegrationTest, UnreachableDecodeWorkerIsSkipped) {
  auto dead = std::make_unique<FakeWorkerServer>();
  const std::string dead_address = dead->address();
  dead->Stop();
  workers_.push_back(std::make_unique<FakeWorkerServer>());  // prefill
  workers_.push_back(std::make_unique<FakeWorkerServer>());  // decode
  RouterConfig config;
  config.host = "127.0.0.1";
  config.prefill = {workers_[0]->address()};
  config.decode = {dead_address, workers_[1]->address()};
  config.poll_workers = false;  // so the relay itself meets the dead worker
  StartRouter(std::move(config));
  v1::GenerationSpec spec = Spec(5, 6);
  Outcome out = Generate(spec);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeSequence(spec));
  EXPECT_EQ(worker(1).service().decode_requests().size(), 1u);
}

TEST_F(RouterIntegrationTest, ClientCancellationReachesTheDecodeWorker) {
  StartCluster(1, 1);
  worker(1).service().HangDecodeAfter(2);
  grpc::ClientContext context;
  v1::RouteRequest request;
  *request.mutable_spec() = Spec(8, 50);
  std::unique_ptr<grpc::ClientReader<v1::RouteChunk>> reader = stub_->Generate(&context, request);
  v1::RouteChunk chunk;
  int tokens = 0;
  while (tokens < 3 && reader->Read(&chunk)) tokens += chunk.token_ids_size();
  ASSERT_EQ(tokens, 3);  // the prefill token and the two decode tokens before the hang
  context.TryCancel();
  // Bounded only so that a bug fails instead of hanging; no timing is asserted.
  EXPECT_TRUE(worker(1).service().decode_cancelled().WaitForNotificationWithTimeout(
      absl::Seconds(60)));
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(RouterIntegrationTest, NoEligibleWorkerIsUnavailableWithAMessage) {
  StartCluster(2, 1);
  worker(0).service().FailPrefill(absl::UnavailableError("p0 down"));
  worker(1).service().FailPrefill(absl::UnavailableError("p1 down"));
  Outcome out = Generate(Spec(4, 4));
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(out.status.message().find("no eligible prefill worker"), absl::string_view::npos)
      << out.status;
  EXPECT_TRUE(out.tokens.empty());
  EXPECT_TRUE(worker(2).service().decode_requests().empty());
}

TEST_F(RouterIntegrationTest, ClientDeadlineReachesTheWorkers) {
  StartCluster(1, 1);
  const auto now = std::chrono::system_clock::now();
  const auto deadline = now + std::chrono::hours(1);
  ASSERT_TRUE(Generate(Spec(4, 4), deadline).status.ok());
  ASSERT_TRUE(Generate(Spec(4, 4)).status.ok());
  std::vector<std::chrono::system_clock::time_point> seen =
      worker(1).service().decode_deadlines();
  ASSERT_EQ(seen.size(), 2u);
  // The first call carries the client's deadline. gRPC sends deadlines as timeouts rounded up,
  // so each hop may push it slightly later; a minute of slack is far from "no deadline".
  EXPECT_LE(seen[0], deadline + std::chrono::minutes(1));
  EXPECT_GT(seen[0], now);
  // Without a client deadline the worker call has none either.
  EXPECT_GT(seen[1], now + std::chrono::hours(24 * 365));
}

TEST_F(RouterIntegrationTest, BadSpecIsInvalidArgument) {
  StartCluster(1, 1);
  EXPECT_EQ(Generate(Spec(0, 4)).status.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RouterIntegrationTest, ListWorkersReportsRoles) {
  StartCluster(1, 1);
  grpc::ClientContext context;
  v1::ListWorkersResponse response;
  ASSERT_TRUE(stub_->ListWorkers(&context, v1::ListWorkersRequest(), &response).ok());
  ASSERT_EQ(response.workers_size(), 2);
  EXPECT_EQ(response.workers(0).address(), worker(0).address());
  EXPECT_EQ(response.workers(0).role(), "prefill");
  EXPECT_EQ(response.workers(1).role(), "decode");
}

// Discovery through the real resolver: `dns:localhost:PORT` names a decode worker that is not
// running yet. It is in the pool but unhealthy, so requests fail with a clear UNAVAILABLE; once a
// worker listens there and a poll reaches it, it serves.
TEST_F(RouterIntegrationTest, DiscoveredWorkerJoinsWhenItAnswers) {
  workers_.push_back(std::make_unique<FakeWorkerServer>());  // static prefill worker
  ASSERT_TRUE(worker(0).ok());
  int port = 0;
  {
    FakeWorkerServer probe;  // a port nobody listens on once the probe is gone
    ASSERT_TRUE(probe.ok());
    port = std::stoi(probe.address().substr(probe.address().rfind(':') + 1));
  }
  RouterConfig config;
  config.host = "127.0.0.1";
  config.relay.prefill.block_tokens = 4;
  config.relay_threads = 2;
  config.poll_workers = false;  // the test polls by hand
  config.prefill = {worker(0).address()};
  config.decode = {absl::StrCat("dns:localhost:", port)};
  StartRouter(std::move(config));
  ASSERT_EQ(router_->registry()->List().size(), 2u);
  EXPECT_EQ(router_->registry()->List()[1].address(), absl::StrCat("127.0.0.1:", port));
  EXPECT_FALSE(router_->registry()->List()[1].healthy());
  Outcome before = Generate(Spec(4, 3));
  EXPECT_EQ(before.status.code(), absl::StatusCode::kUnavailable) << before.status;
  EXPECT_NE(before.status.message().find("no eligible decode worker"), absl::string_view::npos)
      << before.status;

  workers_.push_back(std::make_unique<FakeWorkerServer>(port));
  ASSERT_TRUE(worker(1).ok());
  // The channel retries its connection after a backoff (up to 1 s); a poll fails fast until then,
  // as the background poller's would. Poll until it answers (the bound only stops a broken run).
  for (int i = 0; i < 3000 && !router_->registry()->List()[1].healthy(); ++i) {
    router_->registry()->PollOnce();
    if (!router_->registry()->List()[1].healthy()) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(router_->registry()->List()[1].healthy());
  Outcome after = Generate(Spec(4, 3));
  ASSERT_TRUE(after.status.ok()) << after.status;
  EXPECT_EQ(after.tokens, FakeSequence(Spec(4, 3)));
  ASSERT_EQ(worker(1).service().decode_requests().size(), 1u);
  grpc::ClientContext context;
  v1::ListWorkersResponse response;
  ASSERT_TRUE(stub_->ListWorkers(&context, v1::ListWorkersRequest(), &response).ok());
  ASSERT_EQ(response.workers_size(), 2);
  EXPECT_EQ(response.workers(1).role(), "decode");
  EXPECT_TRUE(response.workers(1).healthy());
}

// Peer channels balance over every address of their target (a replicated service behind one
// name), where gRPC's default would pin one. Two servers under one target: both get calls.
TEST(PeerChannelTest, SpreadsCallsOverEveryAddress) {
  FakeWorkerServer a, b;
  ASSERT_TRUE(a.ok() && b.ok());
  WorkerClientPtr client = GrpcWorkerClient::Connect(
      absl::StrCat("ipv4:", a.address(), ",", b.address()));
  // Until both connections are up the one that is takes every call; a bound on the count, not on
  // time, keeps the test from hanging if balancing were off.
  for (int i = 0; i < 5000 && (a.service().get_load_calls() == 0 ||
                              b.service().get_load_calls() == 0); ++i) {
    ASSERT_TRUE(client->GetLoad(CallOptions()).ok());
  }
  EXPECT_GT(a.service().get_load_calls(), 0);
  EXPECT_GT(b.service().get_load_calls(), 0);
}

TEST_F(RouterIntegrationTest, ShutdownWithARequestInFlightCancelsIt) {
  StartCluster(1, 1);
  worker(1).service().HangDecodeAfter(1);
  grpc::ClientContext context;
  v1::RouteRequest request;
  *request.mutable_spec() = Spec(8, 50);
  std::unique_ptr<grpc::ClientReader<v1::RouteChunk>> reader = stub_->Generate(&context, request);
  v1::RouteChunk chunk;
  int tokens = 0;
  while (tokens < 2 && reader->Read(&chunk)) tokens += chunk.token_ids_size();
  ASSERT_EQ(tokens, 2);
  router_->Shutdown();
  EXPECT_TRUE(worker(1).service().decode_cancelled().WaitForNotificationWithTimeout(
      absl::Seconds(60)));
  while (reader->Read(&chunk)) {
  }
  EXPECT_FALSE(reader->Finish().ok());
}

}  // namespace
}  // namespace moeserve::router
