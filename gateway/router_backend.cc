#include "gateway/router_backend.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_callback.h"
#include "common/grpc_channel.h"

namespace moeserve::gateway {
namespace {

}  // namespace

// The calls of one backend whose OnDone has not finished: the backend's destructor cancels them
// and waits until every OnDone has returned from the reactor's last use (gRPC's callback
// completion queue was seen to double free when a test tore the channel down while a reactor
// was still finishing OnDone).
struct RouterBackend::Outstanding {
  absl::Mutex mu;
  uint64_t next_id ABSL_GUARDED_BY(mu) = 0;
  std::map<uint64_t, std::weak_ptr<GenerationCall>> calls ABSL_GUARDED_BY(mu);
};

namespace {

// One Router.Generate stream. Owns itself through `self_` from StartCall until OnDone, so the
// backend keeps it alive until on_done ran; the handle returned to the caller is another owner.
class RouterCall final : public GenerationCall,
                         public grpc::ClientReadReactor<v1::RouteChunk>,
                         public std::enable_shared_from_this<RouterCall> {
 public:
  RouterCall(GenerationCallbacks callbacks,
             std::shared_ptr<RouterBackend::Outstanding> outstanding)
      : callbacks_(std::move(callbacks)), outstanding_(std::move(outstanding)) {}

  void Begin(v1::Router::Stub* stub, v1::RouteRequest request, absl::Time deadline) {
    self_ = shared_from_this();
    {
      absl::MutexLock lock(&outstanding_->mu);
      id_ = outstanding_->next_id++;
      outstanding_->calls[id_] = self_;
    }
    request_ = std::move(request);
    context_.set_deadline(absl::ToChronoTime(deadline));
    stub->async()->Generate(&context_, &request_, this);
    StartRead(&chunk_);
    StartCall();
  }

  void Cancel() override { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows with the status
    GenerationChunk out;
    out.token_ids.assign(chunk_.token_ids().begin(), chunk_.token_ids().end());
    out.logprobs = FromProtoLogprobs(chunk_.logprobs());
    out.finish_reason = FromProtoFinishReason(chunk_.finish_reason());
    out.cached_prompt_tokens = chunk_.cached_prompt_tokens();
    out.prompt_logprobs = FromProtoLogprobs(chunk_.prompt_logprobs());
    if (chunk_.has_stop_logprob()) {
      google::protobuf::RepeatedPtrField<v1::TokenLogprob> one;
      *one.Add() = chunk_.stop_logprob();
      out.stop_logprob = FromProtoLogprobs(one)[0];
    }
    callbacks_.on_chunk(std::move(out));
    StartRead(&chunk_);
  }

  void OnDone(const grpc::Status& status) override {
    callbacks_.on_done(FromGrpcStatus(status));
    callbacks_ = {};
    std::shared_ptr<RouterBackend::Outstanding> outstanding = outstanding_;
    const uint64_t id = id_;
    self_.reset();  // may destroy this
    absl::MutexLock lock(&outstanding->mu);
    outstanding->calls.erase(id);
  }

 private:
  GenerationCallbacks callbacks_;
  std::shared_ptr<RouterBackend::Outstanding> outstanding_;
  uint64_t id_ = 0;
  grpc::ClientContext context_;
  v1::RouteRequest request_;
  v1::RouteChunk chunk_;
  std::shared_ptr<RouterCall> self_;
};

}  // namespace

v1::GenerationSpec ToGenerationSpec(const GenerationRequest& r) {
  v1::GenerationSpec spec;
  spec.set_request_id(r.request_id);
  spec.mutable_prompt_ids()->Add(r.prompt_ids.begin(), r.prompt_ids.end());
  v1::SamplingParams* s = spec.mutable_sampling();
  s->set_temperature(r.sampling.temperature);
  s->set_top_k(r.sampling.top_k);
  s->set_top_p(r.sampling.top_p);
  s->set_min_p(r.sampling.min_p);
  s->set_presence_penalty(r.sampling.presence_penalty);
  s->set_frequency_penalty(r.sampling.frequency_penalty);
  s->set_repetition_penalty(r.sampling.repetition_penalty);
  if (r.sampling.seed) s->set_seed(*r.sampling.seed);
  s->mutable_stop_token_ids()->Add(r.sampling.stop_token_ids.begin(),
                                   r.sampling.stop_token_ids.end());
  s->set_logprobs(r.sampling.logprobs);
  s->set_top_logprobs(r.sampling.top_logprobs);
  for (const auto& [id, bias] : r.sampling.logit_bias) (*s->mutable_logit_bias())[id] = bias;
  spec.set_max_new_tokens(r.max_new_tokens);
  spec.set_ignore_eos(r.ignore_eos);
  spec.set_min_tokens(r.min_tokens);
  spec.set_thinking_budget(r.thinking_budget);
  spec.mutable_think_close_ids()->Add(r.think_close_ids.begin(), r.think_close_ids.end());
  spec.set_sample_vocab(r.sample_vocab);
  spec.set_response_schema(r.response_schema);
  if (r.constraint_after_token) spec.set_constraint_after_token(*r.constraint_after_token);
  if (r.prompt_logprobs) spec.set_prompt_logprobs(*r.prompt_logprobs);
  if (r.tool_calls) {
    v1::ToolCallGrammar* g = spec.mutable_tool_calls();
    g->mutable_open_ids()->Add(r.tool_calls->open.begin(), r.tool_calls->open.end());
    for (const ToolCallGrammarIds::Option& o : r.tool_calls->options) {
      v1::ToolCallGrammar::Option* po = g->add_options();
      po->mutable_head_ids()->Add(o.head.begin(), o.head.end());
      po->set_arguments_schema(o.arguments);
    }
    g->mutable_tail_ids()->Add(r.tool_calls->tail.begin(), r.tool_calls->tail.end());
    g->mutable_separator_ids()->Add(r.tool_calls->separator.begin(), r.tool_calls->separator.end());
    g->mutable_close_ids()->Add(r.tool_calls->close.begin(), r.tool_calls->close.end());
    g->set_parallel(r.tool_calls->parallel);
  }
  return spec;
}

std::vector<engine::SampleResult> FromProtoLogprobs(
    const google::protobuf::RepeatedPtrField<v1::TokenLogprob>& logprobs) {
  std::vector<engine::SampleResult> out;
  out.reserve(logprobs.size());
  for (const v1::TokenLogprob& lp : logprobs) {
    engine::SampleResult& r = out.emplace_back();
    r.token = lp.token_id();
    r.logprob = lp.logprob();
    r.rank = lp.rank();
    const int n = std::min(lp.top_ids_size(), lp.top_logprobs_size());
    for (int i = 0; i < n; ++i) r.top_logprobs.push_back({lp.top_ids(i), lp.top_logprobs(i)});
  }
  return out;
}

FinishReason FromProtoFinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return FinishReason::kStop;
    case v1::FINISH_REASON_LENGTH:
      return FinishReason::kLength;
    case v1::FINISH_REASON_CANCELLED:
      return FinishReason::kCancelled;
    default:
      return FinishReason::kNone;
  }
}

RouterBackend::RouterBackend(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : stub_(v1::Router::NewStub(std::move(channel))),
      timeout_(timeout),
      outstanding_(std::make_shared<Outstanding>()) {}

RouterBackend::~RouterBackend() {
  std::vector<std::shared_ptr<GenerationCall>> live;
  {
    absl::MutexLock lock(&outstanding_->mu);
    for (auto& [key, weak] : outstanding_->calls) {
      if (std::shared_ptr<GenerationCall> call = weak.lock()) live.push_back(std::move(call));
    }
  }
  for (const auto& call : live) call->Cancel();
  live.clear();
  absl::MutexLock lock(&outstanding_->mu);
  outstanding_->mu.Await(absl::Condition(
      +[](Outstanding* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(o->mu) { return o->calls.empty(); },
      outstanding_.get()));
}

std::unique_ptr<RouterBackend> RouterBackend::Connect(const std::string& address,
                                                      absl::Duration timeout) {
  // The first RouteChunk of a scored prompt carries its prompt_logprobs (see
  // GrpcWorkerClient::Connect): past gRPC's 4 MiB default for long prompts.
  return std::make_unique<RouterBackend>(NewPeerChannel(address, /*unlimited_messages=*/true),
                                         timeout);
}

GenerationCallPtr RouterBackend::Start(GenerationRequest request, GenerationCallbacks callbacks) {
  v1::RouteRequest route;
  *route.mutable_spec() = ToGenerationSpec(request);
  route.set_priority(request.priority);
  // The client's own deadline when it is sooner than the gateway's --router-timeout-s.
  const absl::Time deadline = std::min(absl::Now() + timeout_, request.deadline);
  auto call = std::make_shared<RouterCall>(std::move(callbacks), outstanding_);
  call->Begin(stub_.get(), std::move(route), deadline);
  return call;
}

}  // namespace moeserve::gateway
