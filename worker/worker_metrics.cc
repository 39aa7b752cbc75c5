#include "worker/worker_metrics.h"

#include "common/metrics.h"
#include "worker/engine_loop.h"

namespace moeserve::worker {
namespace {

double SecondsSince(WorkerMetrics::Clock::time_point t) {
  return std::chrono::duration<double>(WorkerMetrics::Clock::now() - t).count();
}

}  // namespace

WorkerMetrics::WorkerMetrics(const std::string& role)
    : registry_(std::make_shared<prometheus::Registry>()),
      running_(prometheus::BuildGauge()
                   .Name("moeserve_worker_running_sequences")
                   .Help("Sequences admitted to the engine (holding KV pool blocks).")
                   .Labels({{"role", role}})
                   .Register(*registry_)
                   .Add({})),
      waiting_(prometheus::BuildGauge()
                   .Name("moeserve_worker_waiting_sequences")
                   .Help("Sequences queued for admission (waiting for KV pool blocks).")
                   .Labels({{"role", role}})
                   .Register(*registry_)
                   .Add({})),
      kv_waiting_(prometheus::BuildGauge()
                      .Name("moeserve_worker_kv_waiting_sequences")
                      .Help("Sequences waiting for their cached blocks from the KV-cache service.")
                      .Labels({{"role", role}})
                      .Register(*registry_)
                      .Add({})),
      kv_blocks_used_(prometheus::BuildGauge()
                          .Name("moeserve_worker_kv_blocks_used")
                          .Help("Blocks of the worker's KV pool in use.")
                          .Labels({{"role", role}})
                          .Register(*registry_)
                          .Add({})),
      kv_blocks_free_(prometheus::BuildGauge()
                          .Name("moeserve_worker_kv_blocks_free")
                          .Help("Free blocks of the worker's KV pool.")
                          .Labels({{"role", role}})
                          .Register(*registry_)
                          .Add({})),
      queue_wait_(prometheus::BuildHistogram()
                      .Name("moeserve_worker_queue_wait_seconds")
                      .Help("From a job's arrival (or preemption) to its admission.")
                      .Labels({{"role", role}})
                      .Register(*registry_)
                      .Add({}, SlowSecondsBuckets())),
      kv_wait_(prometheus::BuildHistogram()
                   .Name("moeserve_worker_kv_wait_seconds")
                   .Help("How long a sequence waited for its blocks from the KV-cache service.")
                   .Labels({{"role", role}})
                   .Register(*registry_)
                   .Add({}, FastSecondsBuckets())),
      generated_(prometheus::BuildCounter()
                     .Name("moeserve_worker_generated_tokens_total")
                     .Help("Tokens sampled and delivered.")
                     .Labels({{"role", role}})
                     .Register(*registry_)
                     .Add({})),
      prefill_step_(prometheus::BuildHistogram()
                        .Name("moeserve_worker_step_seconds")
                        .Help("Engine step time by phase (prefill: the step ran a prompt chunk).")
                        .Labels({{"role", role}})
                        .Register(*registry_)
                        .Add({{"phase", "prefill"}}, FastSecondsBuckets())),
      decode_step_(prometheus::BuildHistogram()
                       .Name("moeserve_worker_step_seconds")
                       .Help("Engine step time by phase (prefill: the step ran a prompt chunk).")
                       .Labels({{"role", role}})
                       .Register(*registry_)
                       .Add({{"phase", "decode"}}, FastSecondsBuckets())),
      prefill_batch_(prometheus::BuildHistogram()
                         .Name("moeserve_worker_batch_size")
                         .Help("Sequences in one engine step, by phase.")
                         .Labels({{"role", role}})
                         .Register(*registry_)
                         .Add({{"phase", "prefill"}}, PowersOfTwoBuckets(1024))),
      decode_batch_(prometheus::BuildHistogram()
                        .Name("moeserve_worker_batch_size")
                        .Help("Sequences in one engine step, by phase.")
                        .Labels({{"role", role}})
                        .Register(*registry_)
                        .Add({{"phase", "decode"}}, PowersOfTwoBuckets(1024))),
      prefill_tokens_(prometheus::BuildCounter()
                          .Name("moeserve_worker_computed_tokens_total")
                          .Help("Tokens run through the model, by phase.")
                          .Labels({{"role", role}})
                          .Register(*registry_)
                          .Add({{"phase", "prefill"}})),
      decode_tokens_(prometheus::BuildCounter()
                         .Name("moeserve_worker_computed_tokens_total")
                         .Help("Tokens run through the model, by phase.")
                         .Labels({{"role", role}})
                         .Register(*registry_)
                         .Add({{"phase", "decode"}})) {}

void WorkerMetrics::SetLoad(const LoadSnapshot& load) {
  running_.Set(static_cast<double>(load.running));
  waiting_.Set(static_cast<double>(load.waiting));
  kv_blocks_free_.Set(static_cast<double>(load.kv_blocks_free));
  kv_blocks_used_.Set(static_cast<double>(load.kv_blocks_total - load.kv_blocks_free));
}

void WorkerMetrics::Admitted(Clock::time_point submitted) {
  queue_wait_.Observe(SecondsSince(submitted));
}

void WorkerMetrics::KvWaitEnded(Clock::time_point started) {
  kv_waiting_.Decrement();
  kv_wait_.Observe(SecondsSince(started));
}

void WorkerMetrics::Step(double seconds, int64_t batch, int64_t tokens) {
  if (batch <= 0) return;
  const bool prefill = tokens > batch;
  (prefill ? prefill_step_ : decode_step_).Observe(seconds);
  (prefill ? prefill_batch_ : decode_batch_).Observe(static_cast<double>(batch));
  (prefill ? prefill_tokens_ : decode_tokens_).Increment(static_cast<double>(tokens));
}

void StepProbe::Done() {
  if (metrics_ == nullptr) return;
  const double seconds = SecondsSince(start_);
  int64_t batch = 0, tokens = 0;
  for (const auto& [seq, before] : before_) {
    absl::StatusOr<int64_t> after = engine_.CachedTokens(seq);
    if (!after.ok() || *after <= before) continue;
    ++batch;
    tokens += *after - before;
  }
  metrics_->Step(seconds, batch, tokens);
}

}  // namespace moeserve::worker
