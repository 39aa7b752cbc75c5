#ifndef MOESERVE_TESTS_UNIT_ROUTER_FAKE_WORKER_H_
#define MOESERVE_TESTS_UNIT_ROUTER_FAKE_WORKER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "moeserve/v1/worker.pb.h"
#include "router/worker_client.h"

namespace moeserve::router::testing {

// The fake model: token i of a request is a function of its prompt and i only, the way a real
// worker's seeded sampler is keyed by the generated-token count, so a resumed Decode continues
// the same sequence.
inline int32_t FakeToken(const google::protobuf::RepeatedField<int32_t>& prompt, int64_t i) {
  uint64_t h = 1469598103934665603ULL;
  for (int32_t t : prompt) h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ULL;
  h = (h ^ static_cast<uint64_t>(i)) * 1099511628211ULL;
  return static_cast<int32_t>(100 + h % 50000);
}

// The uninterrupted sequence of a spec: tokens 0 .. max_new_tokens-1.
inline std::vector<int32_t> FakeSequence(const v1::GenerationSpec& spec) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < spec.max_new_tokens(); ++i) out.push_back(FakeToken(spec.prompt_ids(), i));
  return out;
}

inline constexpr int32_t kFakeCachedPromptTokens = 7;
inline constexpr int32_t kFakeStopToken = 1;
inline constexpr float kFakeStopLogprob = -0.5f;

// An in-process WorkerClient with the fake model. Thread-safe. Knobs make it fail.
class FakeWorkerClient final : public WorkerClient {
 public:
  // Prefill errors, returned by the next calls in order (then it succeeds).
  void FailPrefill(std::vector<absl::Status> errors) {
    absl::MutexLock lock(&mu_);
    prefill_errors_ = std::move(errors);
  }
  // The next Decode streams `tokens` tokens, then fails with `error` (OK: ends with no finish).
  void FailDecodeAfter(int tokens, absl::Status error) {
    absl::MutexLock lock(&mu_);
    decode_fail_after_ = tokens;
    decode_error_ = std::move(error);
  }
  // Decode sends this many tokens per chunk and ignores max_new_tokens (to test the router's cap).
  void OvershootDecode(int tokens_per_chunk) {
    absl::MutexLock lock(&mu_);
    overshoot_ = tokens_per_chunk;
  }
  // The generation "samples" stop token kFakeStopToken (logprob kFakeStopLogprob) as its token
  // number `generated`: Prefill (generated 0) or Decode ends there with STOP and stop_logprob.
  void StopAt(int generated) {
    absl::MutexLock lock(&mu_);
    stop_at_ = generated;
  }
  void SetLoad(int running, int waiting, int64_t free_blocks) {
    absl::MutexLock lock(&mu_);
    load_.set_running(running);
    load_.set_waiting(waiting);
    load_.set_kv_blocks_free(free_blocks);
  }
  void FailGetLoad(bool fail) {
    absl::MutexLock lock(&mu_);
    fail_get_load_ = fail;
  }

  int prefill_calls() const {
    absl::MutexLock lock(&mu_);
    return prefill_calls_;
  }
  std::vector<v1::DecodeRequest> decode_requests() const {
    absl::MutexLock lock(&mu_);
    return decode_requests_;
  }

  absl::StatusOr<v1::PrefillResponse> Prefill(const v1::PrefillRequest& request,
                                              const CallOptions& /*options*/) override {
    absl::MutexLock lock(&mu_);
    ++prefill_calls_;
    if (!prefill_errors_.empty()) {
      absl::Status error = prefill_errors_.front();
      prefill_errors_.erase(prefill_errors_.begin());
      return error;
    }
    const v1::GenerationSpec& spec = request.spec();
    v1::PrefillResponse response;
    if (stop_at_ == spec.generated_ids_size()) {
      response.set_finish_reason(v1::FINISH_REASON_STOP);
      SetStopLogprob(response.mutable_stop_logprob());
      return response;
    }
    response.add_token_ids(FakeToken(spec.prompt_ids(), spec.generated_ids_size()));
    response.set_cached_prompt_tokens(kFakeCachedPromptTokens);
    if (spec.generated_ids_size() + 1 >= spec.max_new_tokens()) {
      response.set_finish_reason(v1::FINISH_REASON_LENGTH);
    }
    return response;
  }

  absl::Status Decode(const v1::DecodeRequest& request, const CallOptions& /*options*/,
                      const std::function<bool(const v1::DecodeChunk&)>& on_chunk) override {
    int fail_after = -1;
    absl::Status error;
    int overshoot = 0;
    int stop_at = -1;
    {
      absl::MutexLock lock(&mu_);
      stop_at = stop_at_;
      decode_requests_.push_back(request);
      std::swap(fail_after, decode_fail_after_);
      error = decode_error_;
      overshoot = overshoot_;
    }
    const v1::GenerationSpec& spec = request.spec();
    int sent = 0;
    for (int64_t i = spec.generated_ids_size(); overshoot > 0 || i < spec.max_new_tokens();) {
      if (sent == fail_after) return error;
      v1::DecodeChunk chunk;
      if (i == stop_at) {
        chunk.set_finish_reason(v1::FINISH_REASON_STOP);
        SetStopLogprob(chunk.mutable_stop_logprob());
        on_chunk(chunk);
        break;
      }
      const int per_chunk = overshoot > 0 ? overshoot : 1;
      for (int k = 0; k < per_chunk; ++k) chunk.add_token_ids(FakeToken(spec.prompt_ids(), i++));
      if (overshoot == 0 && i == spec.max_new_tokens()) {
        chunk.set_finish_reason(v1::FINISH_REASON_LENGTH);
      }
      ++sent;
      if (!on_chunk(chunk)) return absl::CancelledError("stopped by the router");
      if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) break;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::WorkerLoad> GetLoad(const CallOptions& /*options*/) override {
    absl::MutexLock lock(&mu_);
    if (fail_get_load_) return absl::UnavailableError("fake worker down");
    return load_;
  }

 private:
  static void SetStopLogprob(v1::TokenLogprob* lp) {
    lp->set_token_id(kFakeStopToken);
    lp->set_logprob(kFakeStopLogprob);
  }

  mutable absl::Mutex mu_;
  std::vector<absl::Status> prefill_errors_ ABSL_GUARDED_BY(mu_);
  int stop_at_ ABSL_GUARDED_BY(mu_) = -1;
  int decode_fail_after_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Status decode_error_ ABSL_GUARDED_BY(mu_);
  int overshoot_ ABSL_GUARDED_BY(mu_) = 0;
  bool fail_get_load_ ABSL_GUARDED_BY(mu_) = false;
  v1::WorkerLoad load_ ABSL_GUARDED_BY(mu_);
  int prefill_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::DecodeRequest> decode_requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moeserve::router::testing

#endif  // MOESERVE_TESTS_UNIT_ROUTER_FAKE_WORKER_H_
