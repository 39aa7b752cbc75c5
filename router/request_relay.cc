#include "router/request_relay.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kvcache/block_hash.h"

namespace moeserve::router {
namespace {

absl::Status Validate(const v1::GenerationSpec& spec) {
  if (spec.prompt_ids().empty()) return absl::InvalidArgumentError("prompt_ids is empty");
  if (spec.max_new_tokens() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be > 0, got ", spec.max_new_tokens()));
  }
  return absl::OkStatus();
}

absl::Status Exhausted(const absl::Status& pick, const absl::Status& last) {
  if (last.ok()) return pick;
  return absl::UnavailableError(absl::StrCat(pick.message(), "; last worker error: ",
                                             absl::StatusCodeToString(last.code()), ": ",
                                             last.message()));
}

// Relays generated tokens while keeping count against max_new_tokens.
class TokenRelay {
 public:
  TokenRelay(const v1::GenerationSpec& spec, const std::function<void(v1::RouteChunk)>& emit)
      : generated_(spec.generated_ids().begin(), spec.generated_ids().end()),
        limit_(spec.max_new_tokens()),
        emit_(emit) {}

  const std::vector<int32_t>& generated() const { return generated_; }
  bool finished() const { return finished_; }

  // Emits one chunk; returns true once the request is finished.
  template <typename TokenIds, typename Logprobs>
  bool Relay(const TokenIds& tokens, const Logprobs& logprobs, v1::FinishReason finish,
             int32_t cached_prompt_tokens, const v1::TokenLogprob* stop_logprob,
             const Logprobs* prompt_logprobs = nullptr) {
    const int64_t room = std::max<int64_t>(0, limit_ - static_cast<int64_t>(generated_.size()));
    const int64_t n = std::min<int64_t>(room, tokens.size());
    v1::RouteChunk chunk;
    for (int64_t i = 0; i < n; ++i) {
      chunk.add_token_ids(tokens[i]);
      generated_.push_back(tokens[i]);
      if (logprobs.size() == tokens.size()) *chunk.add_logprobs() = logprobs[i];
    }
    if (n < static_cast<int64_t>(tokens.size())) finish = v1::FINISH_REASON_LENGTH;
    // The stop token came after every token of the chunk; one cut off never reached it.
    if (finish == v1::FINISH_REASON_STOP && stop_logprob != nullptr) {
      *chunk.mutable_stop_logprob() = *stop_logprob;
    }
    if (finish == v1::FINISH_REASON_UNSPECIFIED &&
        static_cast<int64_t>(generated_.size()) >= limit_) {
      finish = v1::FINISH_REASON_LENGTH;
    }
    chunk.set_finish_reason(finish);
    chunk.set_cached_prompt_tokens(cached_prompt_tokens);
    if (prompt_logprobs != nullptr) {
      chunk.mutable_prompt_logprobs()->Add(prompt_logprobs->begin(), prompt_logprobs->end());
    }
    finished_ = finish != v1::FINISH_REASON_UNSPECIFIED;
    emit_(std::move(chunk));
    return finished_;
  }

 private:
  std::vector<int32_t> generated_;  // spec.generated_ids, then every relayed token
  const int64_t limit_;
  const std::function<void(v1::RouteChunk)>& emit_;
  bool finished_ = false;
};

}  // namespace

RequestRelay::RequestRelay(WorkerRegistry* registry, RelayOptions options, const Clock* clock,
                           RouterMetrics* metrics)
    : registry_(registry),
      options_(options),
      clock_(clock),
      metrics_(metrics),
      index_(options.prefix_index_blocks) {}

bool RequestRelay::Retryable(const absl::Status& status, const CallOptions& options) const {
  if (options.cancel != nullptr && options.cancel->cancelled()) return false;
  if (absl::IsUnavailable(status)) return true;
  // A worker's own timeout is worth another worker; the request's deadline passing is not.
  return absl::IsDeadlineExceeded(status) && clock_->Now() < options.deadline;
}

PrefixHits RequestRelay::LookupPrefix(const v1::GenerationSpec& spec) const {
  std::vector<kvcache::BlockHash> hashes = kvcache::ChainedBlockHashes(
      spec.prompt_ids(), options_.prefill.block_tokens, options_.block_hash_seed);
  absl::MutexLock lock(&mu_);
  return index_.Lookup(hashes);
}

absl::Status RequestRelay::Run(const v1::GenerationSpec& spec, const CallOptions& options,
                               const std::function<void(v1::RouteChunk)>& emit) {
  if (absl::Status s = Validate(spec); !s.ok()) return s;
  auto stopped = [&]() -> absl::Status {
    if (options.cancel != nullptr && options.cancel->cancelled()) {
      return absl::CancelledError("request cancelled");
    }
    if (clock_->Now() >= options.deadline) return absl::DeadlineExceededError("deadline passed");
    return absl::OkStatus();
  };
  TokenRelay relay(spec, emit);
  if (static_cast<int64_t>(spec.generated_ids_size()) >= spec.max_new_tokens()) {
    relay.Relay(std::vector<int32_t>(), std::vector<v1::TokenLogprob>(),
                v1::FINISH_REASON_LENGTH, 0, nullptr);
    return absl::OkStatus();
  }
  const std::vector<kvcache::BlockHash> hashes = kvcache::ChainedBlockHashes(
      spec.prompt_ids(), options_.prefill.block_tokens, options_.block_hash_seed);

  // Prefill, retried on other workers.
  WorkerIdSet excluded;
  absl::Status last;
  v1::PrefillRequest prefill_request;
  *prefill_request.mutable_spec() = spec;
  absl::StatusOr<v1::PrefillResponse> prefilled = absl::UnavailableError("not attempted");
  for (int attempt = 0; attempt <= options_.retry_attempts; ++attempt) {
    if (absl::Status s = stopped(); !s.ok()) return s;
    PrefixHits hits;
    {
      absl::MutexLock lock(&mu_);
      hits = index_.Lookup(hashes);
    }
    absl::StatusOr<WorkerId> pick =
        PickPrefillWorker(registry_->Snapshot(), hits, options_.prefill, excluded);
    if (!pick.ok()) return Exhausted(pick.status(), last);
    if (metrics_ != nullptr) {
      if (attempt > 0) metrics_->PrefillRetry();
      metrics_->PrefillDecision(hits.contains(*pick) ? hits.at(*pick) : 0);
    }
    if (WorkerClientPtr client = registry_->Client(*pick)) {
      prefilled = client->Prefill(prefill_request, options);
    } else {
      prefilled = absl::UnavailableError("the worker left the pool");
    }
    if (prefilled.ok()) {
      absl::MutexLock lock(&mu_);
      index_.Record(hashes, *pick);
      break;
    }
    last = prefilled.status();
    if (!Retryable(last, options)) return last;
    excluded.insert(*pick);
    registry_->ReportFailure(*pick);
  }
  if (!prefilled.ok()) {
    return absl::UnavailableError(absl::StrCat("prefill failed on ", excluded.size(),
                                               " workers; last error: ", last.ToString()));
  }
  if (relay.Relay(prefilled->token_ids(), prefilled->logprobs(), prefilled->finish_reason(),
                  prefilled->cached_prompt_tokens(),
                  prefilled->has_stop_logprob() ? &prefilled->stop_logprob() : nullptr,
                  &prefilled->prompt_logprobs())) {
    return absl::OkStatus();
  }

  // Decode, migrated to another worker when the stream fails.
  excluded.clear();
  last = absl::OkStatus();
  for (int hop = 0; hop <= options_.retry_attempts; ++hop) {
    if (absl::Status s = stopped(); !s.ok()) return s;
    absl::StatusOr<WorkerId> pick = PickDecodeWorker(registry_->Snapshot(), excluded);
    if (!pick.ok()) return Exhausted(pick.status(), last);
    if (metrics_ != nullptr) {
      if (hop > 0) metrics_->DecodeMigration();
      metrics_->DecodeDecision();
    }
    v1::DecodeRequest request;
    *request.mutable_spec() = spec;
    request.mutable_spec()->mutable_generated_ids()->Assign(relay.generated().begin(),
                                                           relay.generated().end());
    WorkerClientPtr client = registry_->Client(*pick);
    absl::Status status =
        client == nullptr
            ? absl::UnavailableError("the worker left the pool")
            : client->Decode(request, options, [&](const v1::DecodeChunk& chunk) {
                return !relay.Relay(chunk.token_ids(), chunk.logprobs(), chunk.finish_reason(), 0,
                                    chunk.has_stop_logprob() ? &chunk.stop_logprob() : nullptr);
              });
    if (relay.finished()) return absl::OkStatus();
    if (status.ok()) {
      status = absl::UnavailableError("decode stream ended without a finish reason");
    }
    last = status;
    if (!Retryable(status, options)) return status;
    excluded.insert(*pick);
    registry_->ReportFailure(*pick);
  }
  return absl::UnavailableError(absl::StrCat("decode failed on ", excluded.size(),
                                             " workers; last error: ", last.ToString()));
}

}  // namespace moeserve::router
