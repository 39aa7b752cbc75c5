#include "bench/sse_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/http_client.h"
#include "nlohmann/json.hpp"

namespace moeserve::bench {

absl::StatusOr<StreamTiming> StreamCompletion(int port, const std::string& path,
                                              const std::string& body, double timeout_s) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  StreamTiming timing;
  bool got_usage = false;
  auto on_event = [&](absl::string_view data) -> absl::Status {
    const double now = elapsed();
    if (data == "[DONE]") {
      timing.e2e = now;
      return absl::OkStatus();
    }
    nlohmann::json j = nlohmann::json::parse(data.begin(), data.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InternalError(absl::StrCat("bad SSE event: ", data));
    }
    if (j.contains("error")) return absl::InternalError(absl::StrCat("stream error: ", data));
    auto choices = j.find("choices");
    if (choices != j.end() && choices->is_array() && !choices->empty()) {
      // A closing chunk with no text and a finish_reason carries no token.
      const nlohmann::json& c = choices->front();
      const bool closing = c.is_object() && c.contains("finish_reason") &&
                           !c["finish_reason"].is_null() && c.value("text", std::string()).empty();
      if (closing) return absl::OkStatus();
      if (timing.token_times.empty()) timing.ttft = now;
      timing.token_times.push_back(now);
    }
    auto usage = j.find("usage");
    if (usage != j.end() && usage->is_object()) {
      timing.output_tokens = usage->value("completion_tokens", int64_t{0});
      timing.prompt_tokens = usage->value("prompt_tokens", int64_t{0});
      timing.cached_tokens = usage->value("prompt_cache_hit_tokens", int64_t{0});
      got_usage = true;
    }
    return absl::OkStatus();
  };
  HttpRequest request;
  request.method = "POST";
  request.target = path;
  request.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  request.body = body;
  request.idle_timeout_s = timeout_s;
  HttpUrl server{"127.0.0.1", port, ""};
  absl::StatusOr<HttpResponse> response = SendHttp(server, request, on_event);
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    return absl::UnavailableError(
        absl::StrCat("HTTP ", response->status, ": ", response->body.substr(0, 500)));
  }
  if (timing.e2e == 0) timing.e2e = elapsed();
  if (!got_usage) timing.output_tokens = static_cast<int64_t>(timing.token_times.size());
  if (timing.token_times.empty()) return absl::InternalError("the stream carried no tokens");
  return timing;
}

}  // namespace moeserve::bench
