#ifndef MOESERVE_GATEWAY_CALL_REGISTRY_H_
#define MOESERVE_GATEWAY_CALL_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <random>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gateway/generation_backend.h"

namespace moeserve::gateway {

// The generations in flight, so that shutdown can cancel them, plus request id allocation and
// the drain state: once StartDrain() is called, new requests are refused (UNAVAILABLE / 503),
// and the gateway waits until open_responses() is 0 (every accepted response fully written).
// Thread-safe.
class CallRegistry {
 public:
  CallRegistry() : instance_(absl::StrCat(absl::Hex(std::random_device{}(), absl::kZeroPad8))) {}

  // A fresh id with `prefix` ("chatcmpl-", "cmpl-"), unique across gateway processes with high
  // probability (a random instance tag plus a counter).
  std::string NextRequestId(const char* prefix) {
    return absl::StrCat(prefix, instance_, "-", next_id_.fetch_add(1) + 1);
  }
  // Protocol: key = Reserve(); call = backend->Start(...); Attach(key, call); and the
  // backend's on_done calls Remove(key) as its last action (it may run before Attach, which
  // then does nothing).
  uint64_t Reserve() {
    absl::MutexLock lock(&mu_);
    const uint64_t key = ++next_key_;
    calls_[key] = nullptr;
    return key;
  }
  void Attach(uint64_t key, GenerationCallPtr call) {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(key);
    if (it != calls_.end()) it->second = std::move(call);
  }
  void Remove(uint64_t key) {
    absl::MutexLock lock(&mu_);
    calls_.erase(key);
  }
  size_t size() const {
    absl::MutexLock lock(&mu_);
    return calls_.size();
  }
  void StartDrain() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  // An accepted request holds one from acceptance until its response is completely written
  // (or its client is gone), so a drain ends only after the last byte went out.
  void OpenResponse() { open_responses_.fetch_add(1); }
  void CloseResponse() { open_responses_.fetch_sub(1); }
  int64_t open_responses() const { return open_responses_.load(); }
  // Cancels every call in flight, then waits (up to `timeout`) until all have ended.
  // True when none is left.
  bool CancelAllAndWait(absl::Duration timeout) {
    absl::flat_hash_map<uint64_t, GenerationCallPtr> calls;
    {
      absl::MutexLock lock(&mu_);
      calls = calls_;
    }
    for (auto& [key, call] : calls) {
      if (call != nullptr) call->Cancel();
    }
    calls.clear();
    absl::MutexLock lock(&mu_);
    auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_.empty(); };
    return mu_.AwaitWithTimeout(absl::Condition(&empty), timeout);
  }

 private:
  const std::string instance_;
  std::atomic<uint64_t> next_id_{0};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> open_responses_{0};
  mutable absl::Mutex mu_;
  uint64_t next_key_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, GenerationCallPtr> calls_ ABSL_GUARDED_BY(mu_);
};

// Holds one of a registry's open responses for its own lifetime.
class ResponseHold {
 public:
  explicit ResponseHold(CallRegistry* registry) : registry_(registry) {
    registry_->OpenResponse();
  }
  ~ResponseHold() { registry_->CloseResponse(); }
  ResponseHold(const ResponseHold&) = delete;
  ResponseHold& operator=(const ResponseHold&) = delete;

 private:
  CallRegistry* const registry_;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_CALL_REGISTRY_H_
