#ifndef MOESERVE_GATEWAY_GATEWAY_METRICS_H_
#define MOESERVE_GATEWAY_GATEWAY_METRICS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "gateway/output_assembler.h"
#include "gateway/price_table.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moeserve::gateway {

// The gateway's metrics (deploy/METRICS.md): requests by route, model and status code; time to
// first token and to first answer token (the first token after </think>); inter-token latency;
// end-to-end latency; reasoning and answer tokens; prompt cache hit and miss tokens; open streams;
// cancellations; cost per API key from the price table. Thread-safe.
//
// `code` labels are HTTP status codes; gRPC calls use the HTTP equivalent of their status
// (common/http_status.h), so one error-rate expression covers both APIs.
class GatewayMetrics {
 public:
  // `prices` is not owned and outlives this object.
  explicit GatewayMetrics(const PriceTable* prices);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  const PriceTable& prices() const { return *prices_; }

  // Creates the per-route series of `model` at zero (generation routes, the anonymous cost), so
  // rates and ratios over them exist before the first request or cancellation.
  void Preinitialize(const std::string& model);

  // A response that is not a generation (errors before one starts, /v1/models, /health, ...).
  void CountResponse(absl::string_view route, absl::string_view model, int code);

  // The api_key label: "anonymous" without a bearer token, else "sha256:" and the first 16 hex
  // digits of the token's SHA-256 (never the key itself). After kMaxApiKeys distinct keys, new
  // ones are "other", so random tokens cannot grow the series without bound.
  std::string ApiKeyLabel(absl::string_view authorization_header);
  static constexpr size_t kMaxApiKeys = 1000;

  // Resumable streams: a reconnect's outcome ("resumed", "not_found", "invalid"); the streams
  // now detached, and how many more expired (a sweep's result).
  void CountStreamResume(absl::string_view outcome);
  void SetStreamState(size_t detached, size_t expired);

 private:
  friend class RequestMetrics;

  const PriceTable* const prices_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& cancelled_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Family<prometheus::Histogram>& ttfat_;
  prometheus::Family<prometheus::Histogram>& itl_;
  prometheus::Family<prometheus::Histogram>& e2e_;
  prometheus::Family<prometheus::Counter>& reasoning_tokens_;
  prometheus::Family<prometheus::Counter>& answer_tokens_;
  prometheus::Family<prometheus::Counter>& cache_hit_tokens_;
  prometheus::Family<prometheus::Counter>& cache_miss_tokens_;
  prometheus::Family<prometheus::Counter>& cost_;
  prometheus::Gauge& open_streams_;
  prometheus::Family<prometheus::Counter>& stream_resumes_;
  prometheus::Gauge& detached_streams_;
  prometheus::Counter& streams_expired_;

  absl::Mutex mu_;
  absl::flat_hash_set<std::string> api_keys_ ABSL_GUARDED_BY(mu_);
};

// The metrics of one generation, from the request's arrival to its end. Not thread-safe: the
// caller serialises calls (the HTTP connection's strand, or the gRPC call's mutex).
class RequestMetrics {
 public:
  // `metrics` is not owned and outlives this object. A streaming request counts as an open
  // stream until Finish.
  RequestMetrics(GatewayMetrics* metrics, std::string route, std::string model,
                 std::string api_key, bool stream);
  ~RequestMetrics();  // Finish(499) when Finish was not called
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  // After the assembler took a chunk of `tokens` tokens; `usage` is its running count.
  void OnTokens(int64_t tokens, const UsageInfo& usage);
  // The end: the status code, the final usage, and whether the client went away or cancelled.
  // Only the first call counts.
  void Finish(int code, const UsageInfo& usage, bool cancelled);
  // Called once by Finish with the usage that reached the model (zero when no token was
  // generated) and its cost as the cost metric counts it; for per-key accounting.
  void OnFinish(std::function<void(const UsageInfo&, double)> fn) { on_finish_ = std::move(fn); }

 private:
  using Clock = std::chrono::steady_clock;

  GatewayMetrics* const metrics_;
  const std::string route_, model_, api_key_;
  const bool stream_;
  const Clock::time_point start_;
  Clock::time_point last_token_;
  bool first_token_seen_ = false;
  bool first_answer_seen_ = false;
  bool finished_ = false;
  UsageInfo last_usage_;
  std::function<void(const UsageInfo&, double)> on_finish_;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_GATEWAY_METRICS_H_
