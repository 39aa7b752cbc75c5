#ifndef MOESERVE_TESTS_INTEGRATION_GATEWAY_FAKE_GENERATION_BACKEND_H_
#define MOESERVE_TESTS_INTEGRATION_GATEWAY_FAKE_GENERATION_BACKEND_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gateway/generation_backend.h"

namespace moeserve::gateway::testing {

// A GenerationBackend that serves a fixed token script: `tokens` in chunks of `chunk_size`, the
// first chunk reporting `cached_prompt_tokens`, the last one finish_reason STOP. A request whose
// max_new_tokens is kHoldMaxTokens gets the first chunk and then hangs until Cancel() (to test
// cancellation). Records every request and counts cancellations. Thread-safe.
class FakeGenerationBackend final : public GenerationBackend {
 public:
  static constexpr int32_t kHoldMaxTokens = 77;
  // With sampling.logprobs, token number i of the script reports this logprob, and
  // top_logprobs alternatives (id + t, logprob - t).
  static float FakeLogprob(size_t i) { return -0.125f * static_cast<float>(i + 1); }
  // With prompt_logprobs, the first chunk scores prompt token i (i >= 1) at this logprob.
  static float FakePromptLogprob(size_t i) { return -0.5f * static_cast<float>(i); }

  FakeGenerationBackend(std::vector<int32_t> tokens, int32_t cached_prompt_tokens,
                        size_t chunk_size = 2)
      : tokens_(std::move(tokens)), cached_(cached_prompt_tokens), chunk_size_(chunk_size) {}

  GenerationCallPtr Start(GenerationRequest request, GenerationCallbacks callbacks) override {
    const bool hold = request.max_new_tokens == kHoldMaxTokens;
    {
      absl::MutexLock lock(&mu_);
      requests_.push_back(request);
    }
    auto call = std::make_shared<Call>(this, std::move(callbacks));
    for (size_t i = 0; i < tokens_.size(); i += chunk_size_) {
      GenerationChunk chunk;
      chunk.token_ids.assign(tokens_.begin() + i,
                             tokens_.begin() + std::min(tokens_.size(), i + chunk_size_));
      chunk.cached_prompt_tokens = i == 0 ? cached_ : 0;
      if (i == 0 && request.prompt_logprobs) {
        for (size_t p = 1; p < request.prompt_ids.size(); ++p) {
          engine::SampleResult r;
          r.token = request.prompt_ids[p];
          r.logprob = FakePromptLogprob(p);
          chunk.prompt_logprobs.push_back(std::move(r));
        }
      }
      if (request.sampling.logprobs) {
        for (size_t k = 0; k < chunk.token_ids.size(); ++k) {
          engine::SampleResult r;
          r.token = chunk.token_ids[k];
          r.logprob = FakeLogprob(i + k);
          for (int32_t t = 0; t < request.sampling.top_logprobs; ++t) {
            r.top_logprobs.push_back({r.token + t, r.logprob - static_cast<float>(t)});
          }
          chunk.logprobs.push_back(std::move(r));
        }
      }
      const bool last = i + chunk_size_ >= tokens_.size();
      if (last) chunk.finish_reason = FinishReason::kStop;
      call->Emit(std::move(chunk));
      if (hold) return call;  // the rest never comes; Cancel ends it
    }
    call->Done(absl::OkStatus());
    return call;
  }

  int cancels() const {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }
  // Waits (bounded) until at least `n` calls were cancelled.
  bool WaitForCancels(int n, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return cancels_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }
  std::vector<GenerationRequest> requests() const {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

 private:
  class Call final : public GenerationCall {
   public:
    Call(FakeGenerationBackend* backend, GenerationCallbacks callbacks)
        : backend_(backend), callbacks_(std::move(callbacks)) {}
    void Emit(GenerationChunk chunk) {
      absl::MutexLock lock(&mu_);
      if (!done_) callbacks_.on_chunk(std::move(chunk));
    }
    void Done(absl::Status status) {
      absl::MutexLock lock(&mu_);
      if (done_) return;
      done_ = true;
      callbacks_.on_done(std::move(status));
      callbacks_ = {};
    }
    void Cancel() override {
      {
        absl::MutexLock lock(&mu_);
        if (done_) return;
      }
      backend_->CountCancel();
      Done(absl::CancelledError("cancelled by the gateway"));
    }

   private:
    FakeGenerationBackend* const backend_;
    absl::Mutex mu_;
    GenerationCallbacks callbacks_ ABSL_GUARDED_BY(mu_);
    bool done_ ABSL_GUARDED_BY(mu_) = false;
  };

  void CountCancel() {
    absl::MutexLock lock(&mu_);
    ++cancels_;
  }

  const std::vector<int32_t> tokens_;
  const int32_t cached_;
  const size_t chunk_size_;
  mutable absl::Mutex mu_;
  std::vector<GenerationRequest> requests_ ABSL_GUARDED_BY(mu_);
  int cancels_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moeserve::gateway::testing

#endif  // MOESERVE_TESTS_INTEGRATION_GATEWAY_FAKE_GENERATION_BACKEND_H_
