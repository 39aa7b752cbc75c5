#include "gateway/gateway_metrics.h"

#include <openssl/sha.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/metrics.h"

namespace moeserve::gateway {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

}  // namespace

GatewayMetrics::GatewayMetrics(const PriceTable* prices)
    : prices_(prices),
      registry_(std::make_shared<prometheus::Registry>()),
      requests_(BuildCounter()
                    .Name("moeserve_gateway_requests_total")
                    .Help("Requests answered, by route, model and HTTP status code (gRPC calls "
                          "by the HTTP equivalent of their status).")
                    .Register(*registry_)),
      cancelled_(BuildCounter()
                     .Name("moeserve_gateway_requests_cancelled_total")
                     .Help("Generations ended because the client disconnected or cancelled.")
                     .Register(*registry_)),
      ttft_(BuildHistogram()
                .Name("moeserve_gateway_time_to_first_token_seconds")
                .Help("From the request's arrival to its first generated token.")
                .Register(*registry_)),
      ttfat_(BuildHistogram()
                 .Name("moeserve_gateway_time_to_first_answer_token_seconds")
                 .Help("From the request's arrival to the first token after </think> (the first "
                       "token when the request does not reason).")
                 .Register(*registry_)),
      itl_(BuildHistogram()
               .Name("moeserve_gateway_inter_token_latency_seconds")
               .Help("Time between consecutive generated tokens (a chunk's gap spread over its "
                     "tokens).")
               .Register(*registry_)),
      e2e_(BuildHistogram()
               .Name("moeserve_gateway_request_duration_seconds")
               .Help("End-to-end latency of a generation, arrival to last byte queued.")
               .Register(*registry_)),
      reasoning_tokens_(BuildCounter()
                            .Name("moeserve_gateway_reasoning_tokens_total")
                            .Help("Generated tokens inside <think>...</think> (with </think>).")
                            .Register(*registry_)),
      answer_tokens_(BuildCounter()
                         .Name("moeserve_gateway_answer_tokens_total")
                         .Help("Generated tokens of the answer (after </think>).")
                         .Register(*registry_)),
      cache_hit_tokens_(BuildCounter()
                            .Name("moeserve_gateway_prompt_cache_hit_tokens_total")
                            .Help("Prompt tokens served from the KV cache.")
                            .Register(*registry_)),
      cache_miss_tokens_(BuildCounter()
                             .Name("moeserve_gateway_prompt_cache_miss_tokens_total")
                             .Help("Prompt tokens computed (not in the KV cache).")
                             .Register(*registry_)),
      cost_(BuildCounter()
                .Name("moeserve_gateway_cost_total")
                .Help("What the generations cost at the price table's prices, in the currency "
                      "of the currency label, per API key (hashed) and model.")
                .Register(*registry_)),
      open_streams_(BuildGauge()
                        .Name("moeserve_gateway_open_streams")
                        .Help("Streaming responses (SSE and gRPC) in progress.")
                        .Register(*registry_)
                        .Add({})),
      stream_resumes_(BuildCounter()
                          .Name("moeserve_gateway_stream_resumes_total")
                          .Help("Reconnects to a resumable stream by outcome: resumed, not_found "
                                "(unknown, expired, another key's) or invalid (a bad "
                                "Last-Event-ID).")
                          .Register(*registry_)),
      detached_streams_(BuildGauge()
                            .Name("moeserve_gateway_detached_streams")
                            .Help("Streams kept for a resume with no client connected.")
                            .Register(*registry_)
                            .Add({})),
      streams_expired_(BuildCounter()
                           .Name("moeserve_gateway_streams_expired_total")
                           .Help("Detached streams dropped after the resume grace period (their "
                                 "generation cancelled if still running).")
                           .Register(*registry_)
                           .Add({})) {
  for (const char* outcome : {"resumed", "not_found", "invalid"}) {
    stream_resumes_.Add({{"outcome", outcome}});
  }
}

void GatewayMetrics::CountStreamResume(absl::string_view outcome) {
  stream_resumes_.Add({{"outcome", std::string(outcome)}}).Increment();
}

void GatewayMetrics::SetStreamState(size_t detached, size_t expired) {
  detached_streams_.Set(static_cast<double>(detached));
  streams_expired_.Increment(static_cast<double>(expired));
}

void GatewayMetrics::Preinitialize(const std::string& model) {
  for (const char* route : {"/v1/chat/completions", "/v1/completions",
                            "/moeserve.v1.Inference/Generate"}) {
    const prometheus::Labels labels = {{"route", route}, {"model", model}};
    cancelled_.Add(labels);
    ttft_.Add(labels, SlowSecondsBuckets());
    ttfat_.Add(labels, SlowSecondsBuckets());
    itl_.Add(labels, FastSecondsBuckets());
    e2e_.Add(labels, SlowSecondsBuckets());
  }
  const prometheus::Labels model_only = {{"model", model}};
  reasoning_tokens_.Add(model_only);
  answer_tokens_.Add(model_only);
  cache_hit_tokens_.Add(model_only);
  cache_miss_tokens_.Add(model_only);
  cost_.Add({{"api_key", "anonymous"}, {"model", model}, {"currency", prices_->currency()}});
}

void GatewayMetrics::CountResponse(absl::string_view route, absl::string_view model, int code) {
  requests_
      .Add({{"route", std::string(route)},
            {"model", std::string(model)},
            {"code", std::to_string(code)}})
      .Increment();
}

std::string GatewayMetrics::ApiKeyLabel(absl::string_view authorization_header) {
  absl::string_view value = absl::StripAsciiWhitespace(authorization_header);
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    return "anonymous";
  }
  const absl::string_view token = absl::StripAsciiWhitespace(value.substr(7));
  if (token.empty()) return "anonymous";
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  std::string label = absl::StrCat(
      "sha256:",
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), 8)));
  absl::MutexLock lock(&mu_);
  if (api_keys_.contains(label)) return label;
  if (api_keys_.size() >= kMaxApiKeys) return "other";
  api_keys_.insert(label);
  return label;
}

RequestMetrics::RequestMetrics(GatewayMetrics* metrics, std::string route, std::string model,
                               std::string api_key, bool stream)
    : metrics_(metrics),
      route_(std::move(route)),
      model_(std::move(model)),
      api_key_(std::move(api_key)),
      stream_(stream),
      start_(Clock::now()),
      last_token_(start_) {
  if (stream_) metrics_->open_streams_.Increment();
}

RequestMetrics::~RequestMetrics() { Finish(499, last_usage_, /*cancelled=*/true); }

void RequestMetrics::OnTokens(int64_t tokens, const UsageInfo& usage) {
  last_usage_ = usage;
  if (tokens <= 0 || finished_) return;
  const Clock::time_point now = Clock::now();
  const prometheus::Labels labels = {{"route", route_}, {"model", model_}};
  const double since_start = std::chrono::duration<double>(now - start_).count();
  if (!first_token_seen_) {
    first_token_seen_ = true;
    metrics_->ttft_.Add(labels, SlowSecondsBuckets()).Observe(since_start);
  } else {
    prometheus::Histogram& itl = metrics_->itl_.Add(labels, FastSecondsBuckets());
    const double gap =
        std::chrono::duration<double>(now - last_token_).count() / static_cast<double>(tokens);
    for (int64_t i = 0; i < tokens; ++i) itl.Observe(gap);
  }
  last_token_ = now;
  if (!first_answer_seen_ && usage.completion_tokens > usage.reasoning_tokens) {
    first_answer_seen_ = true;
    metrics_->ttfat_.Add(labels, SlowSecondsBuckets()).Observe(since_start);
  }
}

void RequestMetrics::Finish(int code, const UsageInfo& usage, bool cancelled) {
  if (finished_) return;
  finished_ = true;
  if (stream_) metrics_->open_streams_.Decrement();
  const prometheus::Labels labels = {{"route", route_}, {"model", model_}};
  metrics_->CountResponse(route_, model_, code);
  if (cancelled) metrics_->cancelled_.Add(labels).Increment();
  metrics_->e2e_.Add(labels, SlowSecondsBuckets())
      .Observe(std::chrono::duration<double>(Clock::now() - start_).count());
  const prometheus::Labels model_only = {{"model", model_}};
  const int64_t hit = usage.cached_tokens;
  const int64_t miss = usage.prompt_tokens - usage.cached_tokens;
  metrics_->reasoning_tokens_.Add(model_only).Increment(usage.reasoning_tokens);
  metrics_->answer_tokens_.Add(model_only).Increment(usage.completion_tokens -
                                                      usage.reasoning_tokens);
  // Prompt tokens count once the request reached the model (a first chunk arrived).
  if (first_token_seen_ || usage.completion_tokens > 0) {
    metrics_->cache_hit_tokens_.Add(model_only).Increment(static_cast<double>(hit));
    metrics_->cache_miss_tokens_.Add(model_only).Increment(static_cast<double>(miss));
  }
  const PriceTable& prices = metrics_->prices();
  const double cost =
      first_token_seen_ ? prices.Cost(model_, hit, miss, usage.completion_tokens) : 0.0;
  metrics_->cost_
      .Add({{"api_key", api_key_}, {"model", model_}, {"currency", prices.currency()}})
      .Increment(cost);
  if (on_finish_) {
    const bool reached = first_token_seen_ || usage.completion_tokens > 0;
    on_finish_(reached ? usage : UsageInfo{}, cost);
  }
}

}  // namespace moeserve::gateway
