#include "router/router_service.h"

#include <chrono>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"

namespace moeserve::router {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  // gRPC's "no deadline" is a far-future time point; anything beyond a year counts as none.
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

// One Generate call. The relay thread produces chunks (Push) and the final status (Done); gRPC
// consumes them one write at a time. The reactor deletes itself once both gRPC (OnDone) and the
// relay thread (Done) are through with it.
class GenerateReactor final : public grpc::ServerWriteReactor<v1::RouteChunk> {
 public:
  GenerateReactor() = default;

  CancelToken* cancel() { return &cancel_; }

  void Push(v1::RouteChunk chunk) {
    {
      absl::MutexLock lock(&mu_);
      if (broken_ || finish_requested_) return;
      if (writing_) {
        queue_.push_back(std::move(chunk));
        return;
      }
      writing_ = true;
      current_ = std::move(chunk);
    }
    StartWrite(&current_);
  }

  // The relay's result; Finish runs once every queued chunk is written.
  void Done(const absl::Status& status) {
    bool finish_now = false;
    {
      absl::MutexLock lock(&mu_);
      finish_requested_ = true;
      status_ = status;
      finish_now = !writing_;
      finished_ = finished_ || finish_now;
    }
    if (finish_now) Finish(ToGrpcStatus(status));
    Unref();
  }

  void OnWriteDone(bool ok) override {
    bool write_next = false;
    bool finish_now = false;
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;
        queue_.clear();
      }
      if (!queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = write_next = true;
      } else if (finish_requested_ && !finished_) {
        finished_ = finish_now = true;
        status = status_;
      }
    }
    if (write_next) StartWrite(&current_);
    if (finish_now) Finish(ToGrpcStatus(status));
  }

  void OnCancel() override { cancel_.Cancel(); }

  void OnDone() override { Unref(); }

 private:
  void Unref() {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  CancelToken cancel_;
  absl::Mutex mu_;
  int refs_ ABSL_GUARDED_BY(mu_) = 2;  // gRPC (OnDone) and the relay thread (Done)
  std::deque<v1::RouteChunk> queue_ ABSL_GUARDED_BY(mu_);
  v1::RouteChunk current_;  // the chunk being written; touched only while writing_ is ours
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // a write failed: the client is gone
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

RouterService::RouterService(RequestRelay* relay, WorkerRegistry* registry,
                             RelayExecutor* executor, RouterMetrics* metrics, size_t max_queue)
    : relay_(relay),
      registry_(registry),
      executor_(executor),
      metrics_(metrics),
      max_queue_(max_queue) {}

grpc::ServerWriteReactor<v1::RouteChunk>* RouterService::Generate(
    grpc::CallbackServerContext* context, const v1::RouteRequest* request) {
  auto* reactor = new GenerateReactor();
  CallOptions options;
  options.deadline = DeadlineOf(*context);
  options.cancel = reactor->cancel();
  // The request message lives until Finish, which only Done (below, on the relay thread) calls.
  if (draining_.load()) {
    const absl::Status status = absl::UnavailableError(
        "the router is shutting down and takes no new requests; retry (another replica)");
    if (metrics_ != nullptr) metrics_->CountRequest(status);
    reactor->Done(status);
    return reactor;
  }
  in_flight_.fetch_add(1);
  const auto queued = std::chrono::steady_clock::now();
  const bool accepted = executor_->TrySchedule([this, reactor, request, options, queued] {
    if (metrics_ != nullptr) {
      metrics_->ObserveQueueSeconds(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - queued).count());
    }
    absl::Status status = relay_->Run(request->spec(), options, [reactor](v1::RouteChunk chunk) {
      reactor->Push(std::move(chunk));
    });
    if (metrics_ != nullptr) metrics_->CountRequest(status);
    reactor->Done(status);
    in_flight_.fetch_sub(1);
  }, max_queue_, request->priority());
  if (!accepted) {
    in_flight_.fetch_sub(1);
    const absl::Status status = absl::ResourceExhaustedError(absl::StrCat(
        "overloaded: every relay thread is busy and ", max_queue_,
        " requests are queued (router --max-queue); retry later"));
    if (metrics_ != nullptr) metrics_->CountRequest(status);
    reactor->Done(status);
  }
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::ListWorkers(grpc::CallbackServerContext* context,
                                                     const v1::ListWorkersRequest* /*request*/,
                                                     v1::ListWorkersResponse* response) {
  for (v1::WorkerStatus& status : registry_->List()) *response->add_workers() = std::move(status);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moeserve::router
