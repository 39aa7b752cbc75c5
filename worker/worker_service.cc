#include "worker/worker_service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "proto/logprob_conversion.h"

namespace moeserve::worker {
namespace {

namespace v1 = moeserve::v1;

// Prefill: one unary call; the job's final event completes it.
class PrefillReactor final : public grpc::ServerUnaryReactor, public JobSink {
 public:
  PrefillReactor(v1::PrefillResponse* response, std::shared_ptr<JobControl> control,
                 std::atomic<int64_t>* calls)
      : response_(response), control_(std::move(control)), calls_(calls) {
    calls_->fetch_add(1);
  }

  void Start(std::shared_ptr<PrefillReactor> self) { self_ = std::move(self); }

  void OnEvent(JobEvent ev) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    for (int32_t t : ev.tokens) response_->add_token_ids(t);
    AppendProtoLogprobs(ev.logprobs, response_->mutable_logprobs());
    AppendProtoLogprobs(ev.prompt_logprobs, response_->mutable_prompt_logprobs());
    if (ev.stop_logprob) ToProtoLogprob(*ev.stop_logprob, response_->mutable_stop_logprob());
    if (ev.cached_tokens >= 0) response_->set_cached_prompt_tokens(static_cast<int32_t>(ev.cached_tokens));
    response_->set_published_blocks(response_->published_blocks() +
                                    static_cast<int32_t>(ev.published_blocks));
    if (ev.finish != Finish::kNone) response_->set_finish_reason(FinishToProto(ev.finish));
    if (!ev.done) return;
    finished_ = true;
    if (!ev.error.ok()) {
      Finish(ToGrpcStatus(ev.error));
    } else if (ev.finish == Finish::kCancelled) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled"));
    } else {
      Finish(grpc::Status::OK);
    }
  }
  void FailNow(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    Finish(ToGrpcStatus(status));
  }
  void OnCancel() override { control_->cancelled.store(true); }
  void OnDone() override {  // the loop's sink reference may outlive this
    calls_->fetch_sub(1);
    self_.reset();
  }

 private:
  absl::Mutex mu_;
  v1::PrefillResponse* response_;
  std::shared_ptr<JobControl> control_;
  std::atomic<int64_t>* const calls_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<PrefillReactor> self_;
};

// Decode: a token stream with at most one write in flight; events queue behind it.
class DecodeReactor final : public grpc::ServerWriteReactor<v1::DecodeChunk>, public JobSink {
 public:
  DecodeReactor(std::shared_ptr<JobControl> control, std::atomic<int64_t>* calls)
      : control_(std::move(control)), calls_(calls) {
    calls_->fetch_add(1);
  }
  void Start(std::shared_ptr<DecodeReactor> self) { self_ = std::move(self); }

  void OnEvent(JobEvent ev) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (!ev.tokens.empty() || ev.finish != Finish::kNone || ev.cached_tokens >= 0) {
      v1::DecodeChunk chunk;
      for (int32_t t : ev.tokens) chunk.add_token_ids(t);
      AppendProtoLogprobs(ev.logprobs, chunk.mutable_logprobs());
      if (ev.finish != Finish::kNone) chunk.set_finish_reason(FinishToProto(ev.finish));
      if (ev.stop_logprob) ToProtoLogprob(*ev.stop_logprob, chunk.mutable_stop_logprob());
      if (ev.cached_tokens >= 0) chunk.set_cached_tokens(static_cast<int32_t>(ev.cached_tokens));
      if (ev.error.ok()) queue_.push_back(std::move(chunk));
    }
    if (ev.done) {
      final_ = !ev.error.ok() ? ToGrpcStatus(ev.error)
               : ev.finish == Finish::kCancelled
                   ? grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled")
                   : grpc::Status::OK;
      ending_ = true;
    }
    Pump();
  }
  void FailNow(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    Finish(ToGrpcStatus(status));
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {  // the client went away
      control_->cancelled.store(true);
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      }
      return;
    }
    Pump();
  }
  void OnCancel() override { control_->cancelled.store(true); }
  void OnDone() override {
    calls_->fetch_sub(1);
    self_.reset();
  }

 private:
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (ending_) {
      finished_ = true;
      Finish(final_);
    }
  }

  absl::Mutex mu_;
  std::shared_ptr<JobControl> control_;
  std::atomic<int64_t>* const calls_;
  std::deque<v1::DecodeChunk> queue_ ABSL_GUARDED_BY(mu_);
  v1::DecodeChunk current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<DecodeReactor> self_;
};

}  // namespace

absl::StatusOr<Role> ParseRole(absl::string_view role) {
  if (role == "prefill") return Role::kPrefill;
  if (role == "decode") return Role::kDecode;
  if (role == "both") return Role::kBoth;
  return absl::InvalidArgumentError(
      absl::StrCat("role '", role, "' is not one of prefill, decode, both"));
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kPrefill:
      return "prefill";
    case Role::kDecode:
      return "decode";
    case Role::kBoth:
      return "both";
  }
  return "?";
}

JobSpec SpecFromProto(const v1::GenerationSpec& p) {
  JobSpec s;
  s.request_id = p.request_id();
  s.prompt.assign(p.prompt_ids().begin(), p.prompt_ids().end());
  s.generated.assign(p.generated_ids().begin(), p.generated_ids().end());
  const v1::SamplingParams& sp = p.sampling();
  s.sampling.temperature = sp.temperature();
  s.sampling.top_k = sp.top_k();
  s.sampling.top_p = sp.top_p() > 0 ? sp.top_p() : 1.0;
  s.sampling.min_p = sp.min_p();
  s.sampling.presence_penalty = sp.presence_penalty();
  s.sampling.frequency_penalty = sp.frequency_penalty();
  s.sampling.repetition_penalty = sp.repetition_penalty() > 0 ? sp.repetition_penalty() : 1.0;
  if (sp.has_seed()) s.sampling.seed = sp.seed();
  s.sampling.stop_token_ids.assign(sp.stop_token_ids().begin(), sp.stop_token_ids().end());
  s.sampling.logprobs = sp.logprobs();
  s.sampling.top_logprobs = sp.top_logprobs();
  s.sampling.logit_bias.assign(sp.logit_bias().begin(), sp.logit_bias().end());
  std::sort(s.sampling.logit_bias.begin(), s.sampling.logit_bias.end());  // maps have no order
  s.max_new_tokens = p.max_new_tokens();
  s.ignore_eos = p.ignore_eos();
  s.thinking_budget = p.thinking_budget();
  s.think_close_ids.assign(p.think_close_ids().begin(), p.think_close_ids().end());
  s.sample_vocab = p.sample_vocab();
  s.response_schema = p.response_schema();
  if (p.has_constraint_after_token()) s.constraint_after_token = p.constraint_after_token();
  if (p.has_prompt_logprobs()) s.prompt_logprobs = p.prompt_logprobs();
  s.min_tokens = p.min_tokens();
  if (p.has_tool_calls()) {
    const v1::ToolCallGrammar& g = p.tool_calls();
    ToolCallSpec& t = s.tool_calls.emplace();
    t.open.assign(g.open_ids().begin(), g.open_ids().end());
    for (const v1::ToolCallGrammar::Option& o : g.options()) {
      t.options.push_back({{o.head_ids().begin(), o.head_ids().end()}, o.arguments_schema()});
    }
    t.tail.assign(g.tail_ids().begin(), g.tail_ids().end());
    t.separator.assign(g.separator_ids().begin(), g.separator_ids().end());
    t.close.assign(g.close_ids().begin(), g.close_ids().end());
    t.parallel = g.parallel();
  }
  return s;
}

v1::FinishReason FinishToProto(Finish finish) {
  switch (finish) {
    case Finish::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case Finish::kStop:
      return v1::FINISH_REASON_STOP;
    case Finish::kLength:
      return v1::FINISH_REASON_LENGTH;
    case Finish::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

grpc::ServerUnaryReactor* WorkerService::Prefill(grpc::CallbackServerContext* /*context*/,
                                                 const v1::PrefillRequest* request,
                                                 v1::PrefillResponse* response) {
  auto control = std::make_shared<JobControl>();
  auto reactor = std::make_shared<PrefillReactor>(response, control, &calls_);
  reactor->Start(reactor);
  if (draining_.load()) {
    reactor->FailNow(absl::UnavailableError("worker is shutting down (draining)"));
    return reactor.get();
  }
  if (role_ == Role::kDecode) {
    reactor->FailNow(absl::FailedPreconditionError("this worker only decodes"));
    return reactor.get();
  }
  JobSpec spec = SpecFromProto(request->spec());
  spec.prefill_only = true;
  absl::Status st = loop_->Submit(std::move(spec), control, reactor);
  if (!st.ok()) reactor->FailNow(st);
  return reactor.get();
}

grpc::ServerWriteReactor<v1::DecodeChunk>* WorkerService::Decode(
    grpc::CallbackServerContext* /*context*/, const v1::DecodeRequest* request) {
  auto control = std::make_shared<JobControl>();
  auto reactor = std::make_shared<DecodeReactor>(control, &calls_);
  reactor->Start(reactor);
  if (draining_.load()) {
    reactor->FailNow(absl::UnavailableError("worker is shutting down (draining)"));
    return reactor.get();
  }
  if (role_ == Role::kPrefill) {
    reactor->FailNow(absl::FailedPreconditionError("this worker only prefills"));
    return reactor.get();
  }
  JobSpec spec = SpecFromProto(request->spec());
  spec.prompt_logprobs.reset();  // the prefill scored the prompt; a decode only continues
  absl::Status st = loop_->Submit(std::move(spec), control, reactor);
  if (!st.ok()) reactor->FailNow(st);
  return reactor.get();
}

grpc::ServerUnaryReactor* WorkerService::GetLoad(grpc::CallbackServerContext* context,
                                                 const v1::GetLoadRequest* /*request*/,
                                                 v1::WorkerLoad* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (draining_.load()) {
    // The router's poller then marks this worker unhealthy and picks others for new requests.
    reactor->Finish(ToGrpcStatus(absl::UnavailableError("worker is shutting down (draining)")));
    return reactor;
  }
  LoadSnapshot load = loop_->Load();
  response->set_role(RoleName(role_));
  response->set_running(static_cast<int32_t>(load.running));
  response->set_waiting(static_cast<int32_t>(load.waiting));
  response->set_kv_blocks_free(load.kv_blocks_free);
  response->set_kv_blocks_total(load.kv_blocks_total);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moeserve::worker
