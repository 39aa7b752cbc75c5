#ifndef MOESERVE_WORKER_ENGINE_LOOP_H_
#define MOESERVE_WORKER_ENGINE_LOOP_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "engine/engine.h"
#include "engine/grammar/token_constraint.h"
#include "engine/model.h"
#include "engine/reasoning.h"
#include "engine/sampler.h"
#include "kvcache/kvcache_client.h"
#include "worker/job.h"
#include "worker/worker_metrics.h"

namespace moeserve::worker {

struct LoopOptions {
  engine::EngineOptions engine;
  uint64_t hash_seed = 0;  // separates models in the shared KV cache (see PrefixSeed)
  WorkerMetrics* metrics = nullptr;  // not owned; null: no metrics
  // The model's token bytes, for constrained decoding (response_schema); null: such jobs are
  // refused with FailedPrecondition (no tokenizer in the model directory).
  std::shared_ptr<const engine::grammar::Vocabulary> vocabulary;
};

struct LoadSnapshot {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_free = 0;
  int64_t kv_blocks_total = 0;
};

// The one thread that owns the engine and its paged KV cache (STYLE.md): jobs are submitted from
// any thread, admitted when the pool has room (otherwise they wait, visible in Load()), stepped
// together with continuous batching and chunked prefill, sampled, and their events delivered to
// each job's sink on this thread. A job preempted because the pool ran out is recomputed later
// with identical results (the sampler is keyed by the generated-token count).
//
// With a KV-cache client, a new job first imports the cached full blocks of its tokens, and a
// prefill-only job publishes its prompt's full blocks before it ends.
// Makes a fresh output constraint for one job (each admission replays the job's tokens into a
// new one).
using ConstraintFactory = std::function<std::unique_ptr<engine::grammar::OutputConstraint>()>;

// Compiles the spec's response_schema or tool_calls into a factory. InvalidArgument for a bad
// schema or grammar, or for both at once.
absl::StatusOr<ConstraintFactory> CompileConstraint(
    const JobSpec& spec, std::shared_ptr<const engine::grammar::Vocabulary> vocabulary);

class EngineLoop {
 public:
  // Borrows `model`, `experts` (null: local) and `kv` (null: no shared cache); all must outlive
  // the loop.
  EngineLoop(const engine::Model* model, engine::ExpertExecutor* experts,
             kvcache::KvCacheClient* kv, const LoopOptions& options);
  ~EngineLoop();  // stops the thread; unfinished jobs get Cancelled

  // Queues a job. InvalidArgument for specs the model cannot run (checked up front).
  absl::Status Submit(JobSpec spec, std::shared_ptr<JobControl> control,
                      std::shared_ptr<JobSink> sink);
  LoadSnapshot Load() const;

 private:
  struct Job {
    JobSpec spec;
    std::shared_ptr<JobControl> control;
    std::shared_ptr<JobSink> sink;
    std::optional<engine::Sampler> sampler;
    std::optional<engine::ThinkingBudgetEnforcer> budget;
    ConstraintFactory make_constraint;                                // empty: unconstrained
    std::unique_ptr<engine::grammar::OutputConstraint> constraint;  // set once the answer starts
    engine::SeqId seq = 0;
    bool admitted = false;
    bool first_event_sent = false;
    int64_t cached_tokens = 0;
    int64_t imported_blocks = 0;
    std::vector<engine::SampleResult> prompt_scores;  // with spec.prompt_logprobs, by position
    WorkerMetrics::Clock::time_point queued = WorkerMetrics::Clock::now();  // or preempted
  };
  using JobPtr = std::unique_ptr<Job>;

  void Run();
  void Admit();
  bool TryAdmit(Job* job);
  void Step();
  void HandleOutput(Job* job, engine::StepOutput& out);
  // Feeds a token the sequence now has to the job's output constraint (which starts after
  // constraint_after_token). A token the constraint refuses ends the job with an error.
  absl::Status Constrain(Job* job, int32_t token);
  void Deliver(Job* job, JobEvent event);
  void End(Job* job, Finish finish, absl::Status error = absl::OkStatus(),
              JobEvent event = JobEvent());
  void Publish(Job* job, JobEvent* event);
  void Preempt();
  void ReapCancelled();

  const engine::Model* model_;
  engine::ExpertExecutor* experts_;
  kvcache::KvCacheClient* kv_;
  LoopOptions options_;
  engine::Engine engine_;  // engine thread only

  // common/mutex.h rather than absl::Mutex, so the loop's tests run under TSan.
  mutable Mutex mu_;
  CondVar wake_;  // incoming_ got a job, or stop_ was set
  std::deque<JobPtr> incoming_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  LoadSnapshot load_ ABSL_GUARDED_BY(mu_);

  // Engine thread only.
  std::deque<JobPtr> waiting_;
  std::map<engine::SeqId, JobPtr> running_;
  std::thread thread_;
};

// The KV-cache hash seed for a model: its config.json text, compute dtype and cache element
// type (latents of different models or precisions, and blocks of other bytes, must never be
// shared).
uint64_t PrefixSeed(const std::string& config_json, engine::ComputeDType compute,
                    engine::DType cache_dtype = engine::DType::kF32);

}  // namespace moeserve::worker

#endif  // MOESERVE_WORKER_ENGINE_LOOP_H_
