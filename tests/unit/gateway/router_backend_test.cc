#include "gateway/router_backend.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace moeserve::gateway {
namespace {

// A Router that streams three chunks for every request, or (prompt id 7) one chunk and then
// waits for the client to cancel.
class FakeRouter final : public v1::Router::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::RouteChunk>* Generate(grpc::CallbackServerContext*,
                                                     const v1::RouteRequest* request) override {
    {
      absl::MutexLock lock(&mu_);
      last_ = *request;
    }
    return new Reactor(this,
                       request->spec().prompt_ids_size() > 0 && request->spec().prompt_ids(0) == 7);
  }
  v1::RouteRequest last() {
    absl::MutexLock lock(&mu_);
    return last_;
  }
  absl::Notification cancelled;

 private:
  class Reactor final : public grpc::ServerWriteReactor<v1::RouteChunk> {
   public:
    Reactor(FakeRouter* router, bool hold) : router_(router), hold_(hold) { Next(); }
    void OnWriteDone(bool ok) override {
      if (!ok) return Finish(grpc::Status::CANCELLED);
      Next();
    }
    void OnCancel() override {
      if (!router_->cancelled.HasBeenNotified()) router_->cancelled.Notify();
      if (hold_) Finish(grpc::Status::CANCELLED);
    }
    void OnDone() override { delete this; }

   private:
    void Next() {
      if (hold_ && sent_ == 1) return;  // wait for OnCancel
      if (sent_ == 3) return Finish(grpc::Status::OK);
      chunk_.Clear();
      chunk_.add_token_ids(100 + sent_);
      chunk_.add_token_ids(200 + sent_);
      if (sent_ == 0) chunk_.set_cached_prompt_tokens(5);
      if (sent_ == 2) chunk_.set_finish_reason(v1::FINISH_REASON_LENGTH);
      ++sent_;
      StartWrite(&chunk_);
    }
    FakeRouter* router_;
    bool hold_;
    int sent_ = 0;
    v1::RouteChunk chunk_;
  };

  absl::Mutex mu_;
  v1::RouteRequest last_;
};

struct Collected {
  absl::Mutex mu;
  std::vector<GenerationChunk> chunks;
  absl::Status status;
  absl::Notification done;
  absl::Notification first_chunk;
};

GenerationCallbacks CollectInto(std::shared_ptr<Collected> c) {
  GenerationCallbacks cb;
  cb.on_chunk = [c](GenerationChunk chunk) {
    absl::MutexLock lock(&c->mu);
    c->chunks.push_back(std::move(chunk));
    if (!c->first_chunk.HasBeenNotified()) c->first_chunk.Notify();
  };
  cb.on_done = [c](absl::Status s) {
    {
      absl::MutexLock lock(&c->mu);
      c->status = std::move(s);
    }
    c->done.Notify();
  };
  return cb;
}

class RouterBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&router_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    backend_ = RouterBackend::Connect(absl::StrCat("127.0.0.1:", port_), absl::Seconds(60));
  }
  void TearDown() override { server_->Shutdown(); }

  FakeRouter router_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<RouterBackend> backend_;
};

TEST_F(RouterBackendTest, StreamsChunksAndSendsTheSpec) {
  GenerationRequest r;
  r.request_id = "chatcmpl-1";
  r.prompt_ids = {1, 2, 3};
  r.sampling.temperature = 0.5;
  r.sampling.seed = 9;
  r.max_new_tokens = 6;
  r.thinking_budget = 256;
  r.think_close_ids = {128799, 271};
  r.sample_vocab = 128815;
  auto c = std::make_shared<Collected>();
  GenerationCallPtr call = backend_->Start(r, CollectInto(c));
  ASSERT_TRUE(c->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  absl::MutexLock lock(&c->mu);
  EXPECT_TRUE(c->status.ok()) << c->status;
  ASSERT_EQ(c->chunks.size(), 3u);
  EXPECT_EQ(c->chunks[0].token_ids, (std::vector<int32_t>{100, 200}));
  EXPECT_EQ(c->chunks[0].cached_prompt_tokens, 5);
  EXPECT_EQ(c->chunks[2].finish_reason, FinishReason::kLength);
  const v1::GenerationSpec spec = router_.last().spec();
  EXPECT_EQ(spec.request_id(), "chatcmpl-1");
  EXPECT_EQ(spec.prompt_ids_size(), 3);
  EXPECT_DOUBLE_EQ(spec.sampling().temperature(), 0.5);
  EXPECT_EQ(spec.sampling().seed(), 9u);
  EXPECT_EQ(spec.max_new_tokens(), 6);
  EXPECT_EQ(spec.thinking_budget(), 256);
  EXPECT_EQ(spec.think_close_ids_size(), 2);
  EXPECT_EQ(spec.sample_vocab(), 128815);
  call->Cancel();  // after the end: harmless
}

TEST_F(RouterBackendTest, CancelReachesTheRouter) {
  GenerationRequest r;
  r.prompt_ids = {7};
  auto c = std::make_shared<Collected>();
  GenerationCallPtr call = backend_->Start(r, CollectInto(c));
  ASSERT_TRUE(c->first_chunk.WaitForNotificationWithTimeout(absl::Seconds(30)));
  call->Cancel();
  ASSERT_TRUE(c->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  {
    absl::MutexLock lock(&c->mu);
    EXPECT_EQ(c->status.code(), absl::StatusCode::kCancelled);
  }
  EXPECT_TRUE(router_.cancelled.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

TEST(RouterBackendDownTest, UnavailableWhenNoRouter) {
  // Port 1 on loopback: nothing listens (and binding it needs root, which tests never do).
  auto backend = RouterBackend::Connect("127.0.0.1:1", absl::Seconds(5));
  auto c = std::make_shared<Collected>();
  GenerationCallPtr call = backend->Start(GenerationRequest(), CollectInto(c));
  ASSERT_TRUE(c->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  absl::MutexLock lock(&c->mu);
  EXPECT_EQ(c->status.code(), absl::StatusCode::kUnavailable) << c->status;
}

}  // namespace
}  // namespace moeserve::gateway
