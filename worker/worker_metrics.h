#ifndef MOESERVE_WORKER_WORKER_METRICS_H_
#define MOESERVE_WORKER_WORKER_METRICS_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moeserve::worker {

struct LoadSnapshot;

// The worker's metrics (deploy/METRICS.md), all with a constant `role` label (prefill, decode,
// both): running and waiting sequences, sequences waiting for KV-cache blocks and how long they
// waited, the queue wait before admission, KV pool blocks used and free, batch size and step time
// by phase, tokens computed by phase and tokens generated. Thread-safe; the engine thread feeds
// it, scrapes read it.
class WorkerMetrics {
 public:
  using Clock = std::chrono::steady_clock;

  explicit WorkerMetrics(const std::string& role);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void SetLoad(const LoadSnapshot& load);
  // A job was admitted to the engine after waiting since `submitted`.
  void Admitted(Clock::time_point submitted);
  // A sequence starts / stops waiting for its blocks from the KV-cache service.
  void KvWaitStarted() { kv_waiting_.Increment(); }
  void KvWaitEnded(Clock::time_point started);
  void Generated(int64_t tokens) { generated_.Increment(static_cast<double>(tokens)); }
  // One engine step of `batch` sequences and `tokens` tokens; prefill when any sequence ran more
  // than one token (a prompt chunk), else decode.
  void Step(double seconds, int64_t batch, int64_t tokens);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Gauge& kv_waiting_;
  prometheus::Gauge& kv_blocks_used_;
  prometheus::Gauge& kv_blocks_free_;
  prometheus::Histogram& queue_wait_;
  prometheus::Histogram& kv_wait_;
  prometheus::Counter& generated_;
  prometheus::Histogram& prefill_step_;
  prometheus::Histogram& decode_step_;
  prometheus::Histogram& prefill_batch_;
  prometheus::Histogram& decode_batch_;
  prometheus::Counter& prefill_tokens_;
  prometheus::Counter& decode_tokens_;
};

// Measures one engine step: construct it just before Engine::Step (it reads every running
// sequence's cached-token count), call Done() right after. Nothing happens when metrics is null.
class StepProbe {
 public:
  template <typename RunningMap>
  StepProbe(WorkerMetrics* metrics, const engine::Engine& engine, const RunningMap& running)
      : metrics_(metrics), engine_(engine) {
    if (metrics_ == nullptr) return;
    for (const auto& entry : running) {
      absl::StatusOr<int64_t> cached = engine_.CachedTokens(entry.first);
      if (cached.ok()) before_[entry.first] = *cached;
    }
    start_ = WorkerMetrics::Clock::now();
  }
  void Done();

 private:
  WorkerMetrics* const metrics_;
  const engine::Engine& engine_;
  std::map<engine::SeqId, int64_t> before_;
  WorkerMetrics::Clock::time_point start_;
};

// Counts a sequence as waiting for KV-cache blocks for the scope's lifetime (null: nothing).
class KvWaitScope {
 public:
  explicit KvWaitScope(WorkerMetrics* metrics)
      : metrics_(metrics), start_(WorkerMetrics::Clock::now()) {
    if (metrics_ != nullptr) metrics_->KvWaitStarted();
  }
  ~KvWaitScope() {
    if (metrics_ != nullptr) metrics_->KvWaitEnded(start_);
  }
  KvWaitScope(const KvWaitScope&) = delete;
  KvWaitScope& operator=(const KvWaitScope&) = delete;

 private:
  WorkerMetrics* const metrics_;
  const WorkerMetrics::Clock::time_point start_;
};

}  // namespace moeserve::worker

#endif  // MOESERVE_WORKER_WORKER_METRICS_H_
