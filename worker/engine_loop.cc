#include "worker/engine_loop.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "engine/grammar/tool_call_constraint.h"
#include "kvcache/block_hash.h"

namespace moeserve::worker {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A request without a seed still draws the same values wherever it runs (migration), so its
// default seed comes from its id.
uint64_t DefaultSeed(const std::string& request_id) {
  return kvcache::SipHash128(0x5eed, 0, request_id).lo;
}

std::vector<int32_t> AllTokens(const JobSpec& s) {
  std::vector<int32_t> t = s.prompt;
  t.insert(t.end(), s.generated.begin(), s.generated.end());
  return t;
}

// The logits a job samples from (and scores by): ids below sample_vocab when it is set.
absl::Span<const float> SampleChoices(const JobSpec& spec, absl::Span<const float> logits) {
  if (spec.sample_vocab > 0 && spec.sample_vocab < static_cast<int64_t>(logits.size())) {
    return logits.subspan(0, spec.sample_vocab);
  }
  return logits;
}

}  // namespace

absl::StatusOr<ConstraintFactory> CompileConstraint(
    const JobSpec& spec, std::shared_ptr<const engine::grammar::Vocabulary> vocabulary) {
  namespace grammar = engine::grammar;
  if (!spec.response_schema.empty() && spec.tool_calls) {
    return absl::InvalidArgumentError("response_schema and tool_calls are exclusive");
  }
  if (!spec.response_schema.empty()) {
    MOESERVE_ASSIGN_OR_RETURN(std::shared_ptr<const grammar::SchemaGraph> schema,
                              grammar::CompileJsonSchema(spec.response_schema));
    return ConstraintFactory([vocabulary, schema]() -> std::unique_ptr<grammar::OutputConstraint> {
      return std::make_unique<grammar::TokenConstraint>(vocabulary, schema);
    });
  }
  MOESERVE_ASSIGN_OR_RETURN(std::shared_ptr<const grammar::ToolCallGrammar> shared,
                            grammar::CompileToolCallSpec(*spec.tool_calls, vocabulary->size()));
  return ConstraintFactory([vocabulary, shared]() -> std::unique_ptr<grammar::OutputConstraint> {
    return std::make_unique<grammar::ToolCallConstraint>(vocabulary, shared);
  });
}

uint64_t PrefixSeed(const std::string& config_json, engine::ComputeDType compute,
                    engine::DType cache_dtype) {
  // A BF16 cache's blocks are other bytes (half as many): its own namespace. A float32 cache
  // keeps the seed it always had, so existing caches stay valid.
  const uint64_t cache_tag = cache_dtype == engine::DType::kF32 ? 0 : 0xb160000;
  return Mix(kvcache::SipHash128(1, 2, config_json).lo ^
             (compute == engine::ComputeDType::kF32 ? 0x32 : 0x16) ^ cache_tag);
}

EngineLoop::EngineLoop(const engine::Model* model, engine::ExpertExecutor* experts,
                       kvcache::KvCacheClient* kv, const LoopOptions& options)
    : model_(model),
      experts_(experts),
      kv_(kv),
      options_(options),
      engine_(model, options.engine) {
  {
    MutexLock lock(&mu_);
    load_.kv_blocks_total = engine_.cache().num_blocks();
    load_.kv_blocks_free = engine_.cache().free_blocks();
  }
  thread_ = std::thread([this] { Run(); });
}

EngineLoop::~EngineLoop() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.NotifyOne();
  thread_.join();
}

absl::Status EngineLoop::Submit(JobSpec spec, std::shared_ptr<JobControl> control,
                                std::shared_ptr<JobSink> sink) {
  const engine::ModelConfig& c = model_->config();
  if (spec.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  std::vector<int32_t> all = AllTokens(spec);
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] < 0 || all[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", all[i], " at position ", i,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  // The thinking budget's close tokens are appended unsampled: they must be tokens of the model
  // too (found by tests/fuzz/worker_grpc_fuzzer; such an id reached the client).
  for (int32_t id : spec.think_close_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "think_close_ids holds ", id, ", outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (static_cast<int64_t>(all.size()) >= c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("sequence of ", all.size(),
                                                   " tokens leaves no room in the context of ",
                                                   c.max_position_embeddings));
  }
  if (spec.max_new_tokens < 1) return absl::InvalidArgumentError("max_new_tokens must be >= 1");
  // max_new_tokens counts generated_ids: a resumed spec with no budget left would still get a
  // token from the first step (found by tests/fuzz/worker_grpc_fuzzer).
  if (static_cast<int64_t>(spec.generated.size()) >= spec.max_new_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.generated.size(), " generated_ids leave nothing of max_new_tokens ",
                     spec.max_new_tokens));
  }
  if (spec.sample_vocab < 0 || spec.sample_vocab > c.vocab_size) {
    return absl::InvalidArgumentError("sample_vocab out of range");
  }
  if (spec.min_tokens < 0 || spec.min_tokens > spec.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("min_tokens ", spec.min_tokens,
                                                   " is outside [0, max_new_tokens = ",
                                                   spec.max_new_tokens, "]"));
  }
  MOESERVE_RETURN_IF_ERROR(engine::ValidateSamplingParams(spec.sampling, c.vocab_size));
  if (spec.prompt_logprobs && (*spec.prompt_logprobs < 0 || *spec.prompt_logprobs > 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_logprobs ", *spec.prompt_logprobs, " is outside [0, 20]"));
  }
  ConstraintFactory make_constraint;
  if (!spec.response_schema.empty() || spec.tool_calls) {
    if (options_.vocabulary == nullptr) {
      return absl::FailedPreconditionError(
          "structured output needs the model's tokenizer, and this worker's model has none");
    }
    MOESERVE_ASSIGN_OR_RETURN(make_constraint, CompileConstraint(spec, options_.vocabulary));
  }
  auto job = std::make_unique<Job>();
  job->make_constraint = std::move(make_constraint);
  job->spec = std::move(spec);
  job->control = std::move(control);
  job->sink = std::move(sink);
  {
    MutexLock lock(&mu_);
    incoming_.push_back(std::move(job));
  }
  wake_.NotifyOne();
  return absl::OkStatus();
}

LoadSnapshot EngineLoop::Load() const {
  MutexLock lock(&mu_);
  return load_;
}

void EngineLoop::Run() {
  while (true) {
    {
      MutexLock lock(&mu_);
      if (running_.empty() && waiting_.empty()) {
        wake_.Wait(&mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || !incoming_.empty();
        });
      }
      if (stop_) break;
      while (!incoming_.empty()) {
        waiting_.push_back(std::move(incoming_.front()));
        incoming_.pop_front();
      }
    }
    ReapCancelled();
    Admit();
    Step();
    MutexLock lock(&mu_);
    load_.running = static_cast<int64_t>(running_.size());
    load_.waiting = static_cast<int64_t>(waiting_.size() + incoming_.size());
    load_.kv_blocks_free = engine_.cache().free_blocks();
    if (options_.metrics != nullptr) options_.metrics->SetLoad(load_);
  }
  for (auto& [seq, job] : running_) End(job.get(), Finish::kCancelled);
  for (JobPtr& job : waiting_) End(job.get(), Finish::kCancelled);
  running_.clear();
  waiting_.clear();
}

void EngineLoop::ReapCancelled() {
  for (auto it = running_.begin(); it != running_.end();) {
    if (it->second->control->cancelled.load()) {
      End(it->second.get(), Finish::kCancelled);
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->control->cancelled.load()) {
      End(it->get(), Finish::kCancelled);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
}

void EngineLoop::Admit() {
  while (!waiting_.empty()) {
    Job* job = waiting_.front().get();
    const int64_t bt = engine_.cache().block_tokens();
    const int64_t len = static_cast<int64_t>(job->spec.prompt.size() + job->spec.generated.size());
    // Room for the whole sequence plus the next token, or the job waits (first come, first
    // served). An idle engine always tries, so a job too large for the pool gets its error.
    if (!running_.empty() && engine_.cache().free_blocks() < (len + 1 + bt - 1) / bt) return;
    JobPtr owned = std::move(waiting_.front());
    waiting_.pop_front();
    if (TryAdmit(job)) running_[job->seq] = std::move(owned);
  }
}

bool EngineLoop::TryAdmit(Job* job) {
  const std::vector<int32_t> tokens = AllTokens(job->spec);
  engine::PositionLogitsFn score;
  if (job->spec.prompt_logprobs) {
    job->prompt_scores.assign(job->spec.prompt.size() - 1, engine::SampleResult());
    score = [job](int64_t position, absl::Span<const float> logits) {
      if (position + 1 >= static_cast<int64_t>(job->spec.prompt.size())) return;
      job->prompt_scores[position] = engine::ScoreToken(SampleChoices(job->spec, logits),
                                                        job->spec.prompt[position + 1],
                                                        *job->spec.prompt_logprobs);
    };
  }
  absl::StatusOr<engine::SeqId> seq = engine_.Add(tokens, std::move(score));
  if (!seq.ok()) {
    End(job, Finish::kNone, seq.status());
    return false;
  }
  job->seq = *seq;
  job->admitted = true;
  if (options_.metrics != nullptr) options_.metrics->Admitted(job->queued);
  job->cached_tokens = 0;
  job->imported_blocks = 0;
  const int64_t bt = engine_.cache().block_tokens();
  const int64_t usable = (static_cast<int64_t>(tokens.size()) - 1) / bt;
  if (kv_ != nullptr && usable > 0 && !job->spec.prompt_logprobs) {
    std::vector<kvcache::BlockHash> hashes =
        kvcache::ChainedBlockHashes(tokens, bt, options_.hash_seed);
    hashes.resize(usable);
    KvWaitScope kv_wait(options_.metrics);
    absl::StatusOr<kvcache::FetchResult> fetched = kv_->Fetch(hashes);
    if (fetched.ok() && !fetched->blocks.empty()) {
      std::vector<std::string> data;
      for (kvcache::FetchedBlock& b : fetched->blocks) data.push_back(std::move(b.data));
      absl::StatusOr<int64_t> imported = engine_.ImportPrefix(job->seq, data);
      if (imported.ok()) {
        job->cached_tokens = *imported;
        job->imported_blocks = *imported / bt;
      } else {
        LogLine("W", absl::StrCat("ignoring cached prefix: ", imported.status().ToString()));
      }
    } else if (!fetched.ok()) {
      // The cache is an optimisation: recompute on any failure.
      LogLine("W", absl::StrCat("KV-cache fetch failed: ", fetched.status().ToString()));
    }
  }
  job->sampler.emplace(job->spec.sampling, DefaultSeed(job->spec.request_id));
  if (job->sampler->IsArgmax() && !job->make_constraint &&
      static_cast<int64_t>(job->spec.generated.size()) >= job->spec.min_tokens) {
    // Greedy with nothing to mask or report: the argmax is taken where the step ran (on the
    // device for a GPU worker), and the logits stay there.
    const int64_t vocab = job->spec.sample_vocab > 0 ? job->spec.sample_vocab
                                                     : model_->config().vocab_size;
    (void)engine_.SetArgmax(job->seq, vocab);
  }
  job->constraint.reset();
  if (job->make_constraint) {
    // Replay what was generated before (resume, migration, preemption) through the constraint.
    if (!job->spec.constraint_after_token) job->constraint = job->make_constraint();
    for (int32_t t : job->spec.generated) {
      if (absl::Status st = Constrain(job, t); !st.ok()) {
        End(job, Finish::kNone, st);
        return false;
      }
    }
  }
  job->budget.reset();
  if (job->spec.thinking_budget >= 0 && !job->spec.think_close_ids.empty()) {
    job->budget.emplace(job->spec.thinking_budget, job->spec.think_close_ids);
    if (job->spec.generated.empty()) {
      absl::Span<const int32_t> forced = job->budget->AtStart();
      if (!forced.empty()) {
        // A budget of 0 closes reasoning before the first sampled token. The close counts
        // against max_new_tokens and the context like any generated token, and it starts a
        // constraint that waits for it (found by tests/fuzz/worker_grpc_fuzzer: a Decode with
        // max_new_tokens 1 streamed the close and then a sampled token).
        const engine::ModelConfig& c = model_->config();
        const int64_t room = std::min<int64_t>(
            job->spec.max_new_tokens,
            c.max_position_embeddings - static_cast<int64_t>(job->spec.prompt.size()));
        forced = forced.subspan(0, static_cast<size_t>(std::max<int64_t>(room, 0)));
        JobEvent ev;
        for (int32_t t : forced) {
          if (absl::Status st = Constrain(job, t); !st.ok()) {
            End(job, Finish::kNone, st);
            return false;
          }
          job->spec.generated.push_back(t);
          ev.tokens.push_back(t);
          if (job->spec.sampling.logprobs) ev.logprobs.push_back(ForcedToken(t));
          (void)engine_.Append(job->seq, t);
        }
        if (static_cast<int64_t>(forced.size()) >= room) {
          End(job, Finish::kLength, absl::OkStatus(), std::move(ev));
          return false;
        }
        Deliver(job, std::move(ev));
      }
    } else {
      // Resume: replay the budget over what was generated before.
      for (int32_t t : job->spec.generated) {
        if (job->budget->done()) break;
        (void)job->budget->OnReasoningToken(t);
      }
    }
  }
  return true;
}

void EngineLoop::Step() {
  if (!engine_.HasPending()) return;
  StepProbe probe(options_.metrics, engine_, running_);
  absl::StatusOr<std::vector<engine::StepOutput>> out = engine_.Step(experts_);
  probe.Done();
  if (!out.ok()) {
    if (out.status().code() == absl::StatusCode::kResourceExhausted && running_.size() > 1) {
      Preempt();
      return;
    }
    for (auto& [seq, job] : running_) End(job.get(), Finish::kNone, out.status());
    running_.clear();
    return;
  }
  std::vector<engine::SeqId> done;
  for (engine::StepOutput& o : *out) {
    auto it = running_.find(o.seq);
    if (it == running_.end()) continue;
    HandleOutput(it->second.get(), o);
    if (!it->second->admitted) done.push_back(o.seq);
  }
  for (engine::SeqId s : done) running_.erase(s);
}

void EngineLoop::HandleOutput(Job* job, engine::StepOutput& out) {
  JobSpec& spec = job->spec;
  const engine::ModelConfig& c = model_->config();
  engine::SampleResult r;
  if (out.argmax >= 0) {
    r.token = out.argmax;  // SetArgmax: the sampler's own choice, found where the step ran
  } else {
    std::vector<float>& logits = out.logits;
    absl::Span<const float> choices = SampleChoices(spec, logits);
    if (job->constraint) {
      job->constraint->MaskLogits(absl::MakeSpan(logits.data(), choices.size()));
    }
    if (static_cast<int64_t>(spec.generated.size()) < spec.min_tokens) {
      // min_tokens: neither EOS nor a stop token id yet.
      auto mask = [&](int64_t id) {
        if (id >= 0 && id < static_cast<int64_t>(choices.size())) {
          logits[id] = -std::numeric_limits<float>::infinity();
        }
      };
      if (c.eos_token_id) mask(*c.eos_token_id);
      for (int32_t id : spec.sampling.stop_token_ids) mask(id);
    }
    r = job->sampler->Sample(choices, spec.prompt, spec.generated);
  }
  JobEvent ev;
  const int32_t t = r.token;
  const bool eos = c.eos_token_id && t == *c.eos_token_id;
  if ((!spec.ignore_eos && eos) || job->sampler->IsStop(t)) {
    ev.finish = Finish::kStop;
    if (spec.sampling.logprobs) ev.stop_logprob = std::move(r);
  } else {
    std::vector<int32_t> fresh = {t};
    if (spec.sampling.logprobs) ev.logprobs.push_back(r);
    if (job->budget && !job->budget->done()) {
      for (int32_t f : job->budget->OnReasoningToken(t)) {
        fresh.push_back(f);
        if (spec.sampling.logprobs) ev.logprobs.push_back(ForcedToken(f));
      }
    }
    // The thinking budget's forced close tokens never run past max_new_tokens or the context
    // (found by tests/fuzz/worker_grpc_fuzzer); the sampled token always fits (Submit checks).
    const int64_t room = std::min<int64_t>(
        spec.max_new_tokens - static_cast<int64_t>(spec.generated.size()),
        c.max_position_embeddings -
            static_cast<int64_t>(spec.prompt.size() + spec.generated.size()));
    if (static_cast<int64_t>(fresh.size()) > room) {
      fresh.resize(static_cast<size_t>(std::max<int64_t>(room, 1)));
      if (ev.logprobs.size() > fresh.size()) ev.logprobs.resize(fresh.size());
    }
    for (int32_t f : fresh) {
      if (absl::Status st = Constrain(job, f); !st.ok()) {
        End(job, Finish::kNone, st);
        return;
      }
      spec.generated.push_back(f);
      ev.tokens.push_back(f);
    }
    const int64_t total = static_cast<int64_t>(spec.prompt.size() + spec.generated.size());
    if (static_cast<int64_t>(spec.generated.size()) >= spec.max_new_tokens ||
        total >= c.max_position_embeddings) {
      ev.finish = Finish::kLength;
    } else {
      for (int32_t f : fresh) (void)engine_.Append(job->seq, f);
    }
  }
  if (spec.prefill_only && ev.finish == Finish::kNone) {
    Publish(job, &ev);
    ev.done = true;
    Deliver(job, std::move(ev));
    (void)engine_.Free(job->seq);
    job->admitted = false;
    return;
  }
  if (ev.finish != Finish::kNone) {
    if (spec.prefill_only) Publish(job, &ev);
    End(job, ev.finish, absl::OkStatus(), std::move(ev));
    return;
  }
  Deliver(job, std::move(ev));
}

absl::Status EngineLoop::Constrain(Job* job, int32_t token) {
  if (!job->make_constraint) return absl::OkStatus();
  if (!job->constraint) {
    if (job->spec.constraint_after_token && token == *job->spec.constraint_after_token) {
      job->constraint = job->make_constraint();
    }
    return absl::OkStatus();
  }
  return job->constraint->Accept(token);
}

void EngineLoop::Publish(Job* job, JobEvent* event) {
  if (kv_ == nullptr) return;
  absl::StatusOr<int64_t> cached = engine_.CachedTokens(job->seq);
  if (!cached.ok()) return;
  const int64_t bt = engine_.cache().block_tokens();
  const int64_t full = *cached / bt;
  if (full <= job->imported_blocks) return;
  std::vector<int32_t> tokens = AllTokens(job->spec);
  tokens.resize(*cached);
  std::vector<kvcache::BlockHash> hashes =
      kvcache::ChainedBlockHashes(tokens, bt, options_.hash_seed);
  std::vector<std::string> data;
  std::vector<kvcache::BlockView> views;
  for (int64_t b = job->imported_blocks; b < full; ++b) {
    absl::StatusOr<std::string> bytes = engine_.ExportBlock(job->seq, b);
    if (!bytes.ok()) return;
    data.push_back(std::move(*bytes));
  }
  for (int64_t b = job->imported_blocks; b < full; ++b) {
    views.push_back({hashes[b], data[b - job->imported_blocks]});
  }
  absl::StatusOr<kvcache::PublishResult> r = kv_->Publish(views);
  if (!r.ok()) {
    LogLine("W", absl::StrCat("KV-cache publish failed: ", r.status().ToString()));
    return;
  }
  event->published_blocks = r->stored + r->already_present;
}

void EngineLoop::Deliver(Job* job, JobEvent event) {
  if (options_.metrics != nullptr) options_.metrics->Generated(event.tokens.size());
  if (!job->first_event_sent) {
    event.cached_tokens = job->cached_tokens;
    event.prompt_logprobs = std::move(job->prompt_scores);
    job->first_event_sent = true;
  }
  job->sink->OnEvent(std::move(event));
}

void EngineLoop::End(Job* job, Finish finish, absl::Status error, JobEvent event) {
  if (job->admitted) {
    (void)engine_.Free(job->seq);
    job->admitted = false;
  }
  event.finish = finish;
  event.error = std::move(error);
  event.done = true;
  Deliver(job, std::move(event));
}

void EngineLoop::Preempt() {
  // The most recently admitted job gives its blocks back and waits at the head of the queue;
  // it is recomputed later, with the same tokens (its generated tokens are kept in its spec).
  auto newest = std::prev(running_.end());
  Job* job = newest->second.get();
  (void)engine_.Free(job->seq);
  job->admitted = false;
  job->queued = WorkerMetrics::Clock::now();
  waiting_.push_front(std::move(newest->second));
  running_.erase(newest);
}

}  // namespace moeserve::worker
