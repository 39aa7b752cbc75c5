#include "gateway/inference_service.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/http_status.h"
#include "gateway/openai_format.h"
#include "gateway/output_assembler.h"
#include "nlohmann/json.hpp"
#include "proto/logprob_conversion.h"

namespace moeserve::gateway {
namespace {

// Ordered: a response_format schema's properties are generated in the order they are declared.
using Json = nlohmann::ordered_json;

constexpr char kGenerateRoute[] = "/moeserve.v1.Inference/Generate";
constexpr char kListModelsRoute[] = "/moeserve.v1.Inference/ListModels";

std::string AuthorizationOf(const grpc::CallbackServerContext& context) {
  const auto& md = context.client_metadata();
  const auto it = md.find("authorization");
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kToolCalls:
      return v1::FINISH_REASON_TOOL_CALLS;
    case FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// The shared state of one Generate call. Backend callbacks and reactor reactions both land
// here under `mu_`; calls into the reactor (StartWrite, Finish) are made outside the lock, and
// only one write is in flight. The reactor is never touched after Finish.
class GenerateState : public std::enable_shared_from_this<GenerateState> {
 public:
  GenerateState(grpc::ServerWriteReactor<v1::InferenceResponse>* reactor, const ModelContext* model,
                const PreparedRequest& prepared, GatewayMetrics* metrics, std::string api_key)
      : reactor_(reactor),
        output_(MakeOutputAssembler(*model->tokenizer, prepared)),
        metrics_(metrics, kGenerateRoute, model->name, std::move(api_key), /*stream=*/true) {}

  // Per-key accounting at the end (set before the backend starts, so unguarded).
  void OnFinish(std::function<void(const UsageInfo&, double)> fn) {
    metrics_.OnFinish(std::move(fn));
  }

  void SetCall(GenerationCallPtr call) {
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      call_ = call;
      cancel = cancelled_;
    }
    if (cancel) call->Cancel();
  }

  void OnChunk(const GenerationChunk& chunk) {
    GenerationCallPtr cancel;
    {
      absl::MutexLock lock(&mu_);
      if (output_.finished() || finish_.has_value()) return;
      TextDelta d = output_.OnChunk(chunk);
      metrics_.OnTokens(static_cast<int64_t>(chunk.token_ids.size()), output_.usage());
      v1::InferenceResponse& p = Pending();
      p.mutable_reasoning_delta()->append(d.reasoning);
      p.mutable_content_delta()->append(d.content);
      p.mutable_token_ids()->Add(chunk.token_ids.begin(), chunk.token_ids.end());
      AppendProtoLogprobs(chunk.logprobs, p.mutable_logprobs());
      AppendProtoLogprobs(chunk.prompt_logprobs, p.mutable_prompt_logprobs());
      if (chunk.stop_logprob) ToProtoLogprob(*chunk.stop_logprob, p.mutable_stop_logprob());
      if (output_.finished()) {
        if (output_.stopped_by_string()) cancel = call_;
        FinishLocked(absl::OkStatus());
      }
    }
    if (cancel != nullptr) cancel->Cancel();
    Pump();
  }

  void OnDone(absl::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (finish_.has_value()) return;
      FinishLocked(std::move(status));
    }
    Pump();
  }

  void OnWriteDone(bool ok) {
    GenerationCallPtr cancel;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The stream is broken (client gone): no more writes; the backend is cancelled and
        // OnDone will finish the call.
        broken_ = true;
        pending_.reset();
        cancel = call_;
      }
    }
    if (cancel != nullptr) cancel->Cancel();
    Pump();
  }

  void OnCancel() {
    GenerationCallPtr cancel;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      cancel = call_;
    }
    if (cancel != nullptr) cancel->Cancel();
  }

 private:
  v1::InferenceResponse& Pending() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!pending_) pending_.emplace();
    return *pending_;
  }

  void FinishLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool natural = status.ok() || output_.finished();
    TextDelta d = output_.Finish(status.ok() ? FinishReason::kStop : FinishReason::kCancelled);
    const bool gone = cancelled_ || broken_ || (!natural && absl::IsCancelled(status));
    metrics_.Finish(gone ? 499 : (natural ? 200 : HttpStatusCode(status.code())), output_.usage(),
                    gone);
    if (natural) {
      v1::InferenceResponse& p = Pending();
      p.mutable_reasoning_delta()->append(d.reasoning);
      p.mutable_content_delta()->append(d.content);
      p.set_finish_reason(ToProtoFinishReason(output_.finish_reason()));
      const UsageInfo& u = output_.usage();
      v1::Usage* usage = p.mutable_usage();
      usage->set_prompt_tokens(u.prompt_tokens);
      usage->set_completion_tokens(u.completion_tokens);
      usage->set_reasoning_tokens(u.reasoning_tokens);
      usage->set_prompt_cache_hit_tokens(u.cached_tokens);
      usage->set_prompt_cache_miss_tokens(u.prompt_tokens - u.cached_tokens);
      finish_ = grpc::Status::OK;
    } else {
      finish_ = ToGrpcStatus(status);
    }
  }

  // Starts the next write, or Finish once everything is written.
  void Pump() {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status finish;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (pending_ && !broken_ && (pending_->ByteSizeLong() > 0 || finish_.has_value())) {
        current_ = std::move(*pending_);
        pending_.reset();
        writing_ = true;
        action = kWrite;
      } else if (finish_.has_value()) {
        finished_ = true;
        finish = *finish_;
        action = kFinish;
      }
    }
    if (action == kWrite) reactor_->StartWrite(&current_);
    if (action == kFinish) reactor_->Finish(finish);
  }

  grpc::ServerWriteReactor<v1::InferenceResponse>* const reactor_;
  absl::Mutex mu_;
  OutputAssembler output_ ABSL_GUARDED_BY(mu_);
  RequestMetrics metrics_ ABSL_GUARDED_BY(mu_);
  GenerationCallPtr call_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::InferenceResponse> pending_ ABSL_GUARDED_BY(mu_);
  v1::InferenceResponse current_;  // the message being written; only touched by the writer
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

class GenerateReactor final : public grpc::ServerWriteReactor<v1::InferenceResponse> {
 public:
  GenerateReactor(const ModelContext* model, GenerationBackend* backend, CallRegistry* calls,
                  GatewayMetrics* metrics, ApiKeyStore* keys, const std::string& authorization,
                  const v1::InferenceRequest& request, absl::Time deadline) {
    if (calls->draining()) {
      metrics->CountResponse(kGenerateRoute, model->name, 503);
      Finish(ToGrpcStatus(absl::UnavailableError(
          "the gateway is shutting down and takes no new requests; retry (another replica)")));
      return;
    }
    std::optional<Principal> principal;
    if (keys != nullptr) {
      absl::StatusOr<Principal> p = keys->Authenticate(authorization);
      if (!p.ok()) {
        metrics->CountResponse(kGenerateRoute, model->name, HttpStatusCode(p.status().code()));
        Finish(ToGrpcStatus(p.status()));
        return;
      }
      principal = *std::move(p);
    }
    absl::StatusOr<ApiRequest> api = FromInferenceRequest(request);
    if (!api.ok()) {
      metrics->CountResponse(kGenerateRoute, model->name, HttpStatusCode(api.status().code()));
      Finish(ToGrpcStatus(api.status()));
      return;
    }
    const char* prefix = api->endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-";
    absl::StatusOr<PreparedRequest> prepared =
        PrepareRequest(*api, *model, calls->NextRequestId(prefix));
    if (!prepared.ok()) {
      metrics->CountResponse(kGenerateRoute, model->name,
                             HttpStatusCode(prepared.status().code()));
      Finish(ToGrpcStatus(prepared.status()));
      return;
    }
    if (principal) {
      if (absl::Status admitted = keys->Admit(*principal); !admitted.ok()) {
        metrics->CountResponse(kGenerateRoute, model->name, HttpStatusCode(admitted.code()));
        Finish(ToGrpcStatus(admitted));
        return;
      }
      prepared->generation.priority =
          std::max(prepared->generation.priority, principal->priority);
    }
    hold_.emplace(calls);  // until OnDone: the last message is written
    prepared->generation.deadline = deadline;  // the client's, passed down to the workers
    state_ = std::make_shared<GenerateState>(this, model, *prepared, metrics,
                                             metrics->ApiKeyLabel(authorization));
    if (principal) {
      state_->OnFinish([keys, p = *principal](const UsageInfo& usage, double cost) {
        keys->Record(p, usage, cost);
      });
    }
    const uint64_t key = calls->Reserve();
    GenerationCallbacks callbacks;
    callbacks.on_chunk = [state = state_](GenerationChunk chunk) { state->OnChunk(chunk); };
    callbacks.on_done = [state = state_, calls, key](absl::Status s) {
      state->OnDone(std::move(s));
      calls->Remove(key);
    };
    GenerationCallPtr call = backend->Start(std::move(prepared->generation), std::move(callbacks));
    calls->Attach(key, call);
    state_->SetCall(std::move(call));
  }

  void OnWriteDone(bool ok) override { state_->OnWriteDone(ok); }
  void OnCancel() override {
    if (state_ != nullptr) state_->OnCancel();
  }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<GenerateState> state_;
  std::optional<ResponseHold> hold_;
};

}  // namespace

absl::StatusOr<ApiRequest> FromInferenceRequest(const v1::InferenceRequest& r) {
  // Re-use the HTTP API's parser and validation on an equivalent JSON body.
  Json j = {{"model", r.model()}};
  bool chat = false;
  switch (r.input_case()) {
    case v1::InferenceRequest::kChat: {
      chat = true;
      Json messages = Json::array();
      for (const v1::ChatMessage& m : r.chat().messages()) {
        if (!IsValidUtf8(m.content()) || !IsValidUtf8(m.role())) {
          return absl::InvalidArgumentError("message is not valid UTF-8");
        }
        Json message = {{"role", m.role()}, {"content", m.content()}};
        if (m.prefix()) message["prefix"] = true;
        if (m.has_reasoning_content()) {
          if (!IsValidUtf8(m.reasoning_content())) {
            return absl::InvalidArgumentError("reasoning_content is not valid UTF-8");
          }
          message["reasoning_content"] = m.reasoning_content();
        }
        messages.push_back(std::move(message));
      }
      j["messages"] = std::move(messages);
      break;
    }
    case v1::InferenceRequest::kPrompt:
      if (!IsValidUtf8(r.prompt())) return absl::InvalidArgumentError("prompt is not valid UTF-8");
      j["prompt"] = r.prompt();
      break;
    case v1::InferenceRequest::kPromptIds:
      j["prompt"] =
          Json(std::vector<int32_t>(r.prompt_ids().ids().begin(), r.prompt_ids().ids().end()));
      break;
    case v1::InferenceRequest::INPUT_NOT_SET:
      return absl::InvalidArgumentError("one of chat, prompt or prompt_ids is required");
  }
  if (r.max_tokens() != 0) j["max_tokens"] = r.max_tokens();
  const v1::SamplingParams& s = r.sampling();
  j["temperature"] = s.temperature();
  if (s.top_p() != 0) j["top_p"] = s.top_p();
  j["top_k"] = s.top_k();
  j["min_p"] = s.min_p();
  j["presence_penalty"] = s.presence_penalty();
  j["frequency_penalty"] = s.frequency_penalty();
  if (s.repetition_penalty() != 0) j["repetition_penalty"] = s.repetition_penalty();
  if (s.has_seed()) j["seed"] = s.seed();
  if (!s.logit_bias().empty()) {
    Json bias = Json::object();
    for (const auto& [id, b] : s.logit_bias()) bias[absl::StrCat(id)] = b;
    j["logit_bias"] = std::move(bias);
  }
  if (chat) {
    j["logprobs"] = s.logprobs();
    if (s.top_logprobs() != 0) j["top_logprobs"] = s.top_logprobs();
  } else if (s.logprobs()) {
    j["logprobs"] = s.top_logprobs();
  }
  if (r.stop_size() > 0) {
    Json stop = Json::array();
    for (const std::string& st : r.stop()) {
      if (!IsValidUtf8(st)) return absl::InvalidArgumentError("stop is not valid UTF-8");
      stop.push_back(st);
    }
    j["stop"] = std::move(stop);
  }
  if (!r.reasoning_effort().empty()) j["reasoning_effort"] = r.reasoning_effort();
  j["ignore_eos"] = r.ignore_eos();
  if (r.min_tokens() != 0) j["min_tokens"] = r.min_tokens();
  if (r.priority() != 0) j["priority"] = r.priority();
  if (r.has_suffix()) {
    if (!IsValidUtf8(r.suffix())) return absl::InvalidArgumentError("suffix is not valid UTF-8");
    j["suffix"] = r.suffix();
  }
  if (r.has_response_format()) {
    const v1::ResponseFormat& f = r.response_format();
    if (!IsValidUtf8(f.type())) {
      return absl::InvalidArgumentError("response_format.type is not valid UTF-8");
    }
    Json format = {{"type", f.type()}};
    if (!f.json_schema().empty()) {
      Json schema = Json::parse(f.json_schema(), nullptr, false);
      if (schema.is_discarded()) {
        return absl::InvalidArgumentError("response_format.json_schema is not valid JSON");
      }
      format["json_schema"] = std::move(schema);
    }
    j["response_format"] = std::move(format);
  }
  const std::string body = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  absl::StatusOr<ApiRequest> api =
      chat ? ParseChatCompletionRequest(body) : ParseCompletionRequest(body);
  if (api.ok()) {
    // Token ids in the seed range beyond int64 are not representable in JSON ints; proto's
    // uint64 seed is carried over exactly.
    if (s.has_seed()) api->sampling.seed = s.seed();
    // Stop token ids come only from the proto.
    api->sampling.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
    if (r.has_prompt_logprobs()) api->prompt_logprobs = r.prompt_logprobs();
  }
  return api;
}

grpc::ServerWriteReactor<v1::InferenceResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::InferenceRequest* request) {
  // gRPC's "no deadline" is a far-future time point; anything beyond a year counts as none.
  absl::Time deadline = absl::InfiniteFuture();
  if (context->deadline() < std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    deadline = absl::FromChrono(context->deadline());
  }
  return new GenerateReactor(model_, backend_, calls_, metrics_, keys_, AuthorizationOf(*context),
                             *request, deadline);
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest* /*request*/,
                                                       v1::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (keys_ != nullptr) {
    if (absl::StatusOr<Principal> p = keys_->Authenticate(AuthorizationOf(*context)); !p.ok()) {
      metrics_->CountResponse(kListModelsRoute, model_->name, HttpStatusCode(p.status().code()));
      reactor->Finish(ToGrpcStatus(p.status()));
      return reactor;
    }
  }
  v1::Model* m = response->add_models();
  m->set_id(model_->name);
  m->set_context_length(model_->context_length);
  metrics_->CountResponse(kListModelsRoute, model_->name, 200);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moeserve::gateway
