#ifndef MOESERVE_TESTS_UNIT_ROUTER_FAKE_WORKER_SERVER_H_
#define MOESERVE_TESTS_UNIT_ROUTER_FAKE_WORKER_SERVER_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_status.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "moeserve/v1/worker.grpc.pb.h"
#include "tests/unit/router/fake_worker.h"

namespace moeserve::router::testing {

// A Worker gRPC service with the fake model (FakeToken), on the callback API. Knobs:
// fail every Prefill with an error; end Decode streams with UNAVAILABLE after k chunks; or stop
// after k chunks and wait for the caller to cancel (which `decode_cancelled()` then reports).
class FakeWorkerService final : public v1::Worker::CallbackService {
 public:
  void FailPrefill(absl::Status error) {
    absl::MutexLock lock(&mu_);
    prefill_error_ = std::move(error);
  }
  void FailDecodeAfter(int chunks) {
    absl::MutexLock lock(&mu_);
    decode_fail_after_ = chunks;
  }
  void HangDecodeAfter(int chunks) {
    absl::MutexLock lock(&mu_);
    decode_hang_after_ = chunks;
  }
  int prefill_calls() const {
    absl::MutexLock lock(&mu_);
    return prefill_calls_;
  }
  int get_load_calls() const {
    absl::MutexLock lock(&mu_);
    return get_load_calls_;
  }
  std::vector<v1::DecodeRequest> decode_requests() const {
    absl::MutexLock lock(&mu_);
    return decode_requests_;
  }
  // The deadline each Decode call arrived with (far future when the caller set none).
  std::vector<std::chrono::system_clock::time_point> decode_deadlines() const {
    absl::MutexLock lock(&mu_);
    return decode_deadlines_;
  }
  absl::Notification& decode_cancelled() { return decode_cancelled_; }

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* context,
                                    const v1::PrefillRequest* request,
                                    v1::PrefillResponse* response) override {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      ++prefill_calls_;
      status = prefill_error_;
    }
    if (status.ok()) {
      const v1::GenerationSpec& spec = request->spec();
      response->add_token_ids(FakeToken(spec.prompt_ids(), spec.generated_ids_size()));
      response->set_cached_prompt_tokens(kFakeCachedPromptTokens);
      if (spec.has_prompt_logprobs()) {  // fake scores: -position, alternatives -position - k
        for (int p = 1; p < spec.prompt_ids_size(); ++p) {
          v1::TokenLogprob* lp = response->add_prompt_logprobs();
          lp->set_token_id(spec.prompt_ids(p));
          lp->set_logprob(-static_cast<float>(p));
          for (int k = 0; k < spec.prompt_logprobs(); ++k) {
            lp->add_top_ids(k);
            lp->add_top_logprobs(-static_cast<float>(p + k));
          }
        }
      }
      if (spec.generated_ids_size() + 1 >= spec.max_new_tokens()) {
        response->set_finish_reason(v1::FINISH_REASON_LENGTH);
      }
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }

  grpc::ServerWriteReactor<v1::DecodeChunk>* Decode(grpc::CallbackServerContext* context,
                                                    const v1::DecodeRequest* request) override {
    int fail_after = -1;
    int hang_after = -1;
    {
      absl::MutexLock lock(&mu_);
      decode_requests_.push_back(*request);
      decode_deadlines_.push_back(context->deadline());
      fail_after = decode_fail_after_;
      hang_after = decode_hang_after_;
    }
    return new DecodeReactor(this, *request, fail_after, hang_after);
  }

  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const v1::GetLoadRequest* /*request*/,
                                    v1::WorkerLoad* response) override {
    {
      absl::MutexLock lock(&mu_);
      ++get_load_calls_;
    }
    response->set_role("both");
    response->set_kv_blocks_free(100);
    response->set_kv_blocks_total(100);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(absl::OkStatus()));
    return reactor;
  }

 private:
  class DecodeReactor final : public grpc::ServerWriteReactor<v1::DecodeChunk> {
   public:
    DecodeReactor(FakeWorkerService* service, const v1::DecodeRequest& request, int fail_after,
                  int hang_after)
        : service_(service), fail_after_(fail_after), hang_after_(hang_after) {
      const v1::GenerationSpec& spec = request.spec();
      for (int64_t i = spec.generated_ids_size(); i < spec.max_new_tokens(); ++i) {
        tokens_.push_back(FakeToken(spec.prompt_ids(), i));
      }
      Next();
    }

    void OnWriteDone(bool ok) override {
      if (!ok) {
        FinishOnce(absl::CancelledError("write failed"));
        return;
      }
      Next();
    }

    void OnCancel() override {
      service_->NotifyDecodeCancelled();
      bool hanging = false;
      {
        absl::MutexLock lock(&mu_);
        cancelled_ = true;
        hanging = hanging_;
      }
      if (hanging) FinishOnce(absl::CancelledError("cancelled by the caller"));
    }

    void OnDone() override { delete this; }

   private:
    void Next() {
      const int sent = static_cast<int>(sent_);
      if (sent == fail_after_) {
        FinishOnce(absl::UnavailableError("fake decode worker died"));
        return;
      }
      if (sent == hang_after_) {
        bool cancelled = false;
        {
          absl::MutexLock lock(&mu_);
          hanging_ = true;
          cancelled = cancelled_;
        }
        // Otherwise OnCancel finishes.
        if (cancelled) FinishOnce(absl::CancelledError("cancelled by the caller"));
        return;
      }
      if (sent_ == tokens_.size()) {
        FinishOnce(absl::OkStatus());
        return;
      }
      chunk_.Clear();
      chunk_.add_token_ids(tokens_[sent_++]);
      if (sent_ == tokens_.size()) chunk_.set_finish_reason(v1::FINISH_REASON_LENGTH);
      StartWrite(&chunk_);
    }

    void FinishOnce(const absl::Status& status) {
      {
        absl::MutexLock lock(&mu_);
        if (finished_) return;
        finished_ = true;
      }
      Finish(ToGrpcStatus(status));
    }

    FakeWorkerService* const service_;
    const int fail_after_;
    const int hang_after_;
    std::vector<int32_t> tokens_;
    size_t sent_ = 0;  // only the write chain touches it (one write at a time)
    v1::DecodeChunk chunk_;
    absl::Mutex mu_;
    bool hanging_ ABSL_GUARDED_BY(mu_) = false;
    bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
  };

  void NotifyDecodeCancelled() {
    absl::MutexLock lock(&mu_);
    if (!decode_cancelled_.HasBeenNotified()) decode_cancelled_.Notify();
  }

  mutable absl::Mutex mu_;
  absl::Status prefill_error_ ABSL_GUARDED_BY(mu_);
  int decode_fail_after_ ABSL_GUARDED_BY(mu_) = -1;
  int decode_hang_after_ ABSL_GUARDED_BY(mu_) = -1;
  int prefill_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int get_load_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::DecodeRequest> decode_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::chrono::system_clock::time_point> decode_deadlines_ ABSL_GUARDED_BY(mu_);
  absl::Notification decode_cancelled_;
};

// A FakeWorkerService on 127.0.0.1:<port> (0: a free port).
class FakeWorkerServer {
 public:
  explicit FakeWorkerServer(int port = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~FakeWorkerServer() { Stop(); }
  void Stop() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
    server_.reset();
  }
  bool ok() const { return server_ != nullptr && port_ != 0; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  FakeWorkerService& service() { return service_; }

 private:
  FakeWorkerService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace moeserve::router::testing

#endif  // MOESERVE_TESTS_UNIT_ROUTER_FAKE_WORKER_SERVER_H_
