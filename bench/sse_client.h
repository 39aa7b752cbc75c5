#ifndef MOESERVE_BENCH_SSE_CLIENT_H_
#define MOESERVE_BENCH_SSE_CLIENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::bench {

// What one streamed completion looked like from the client's side. Times are seconds from just
// before connect().
struct StreamTiming {
  double ttft = 0;                  // first chunk carrying a choice
  std::vector<double> token_times;  // arrival of every chunk carrying a choice
  double e2e = 0;                   // "data: [DONE]" (or the end of the body)
  int64_t output_tokens = 0;        // usage.completion_tokens, else the number of chunks
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;        // usage.prompt_cache_hit_tokens
};

// POSTs `body` (JSON, with "stream": true) to http://127.0.0.1:`port``path` over a fresh
// HTTP/1.1 connection (common/http_client.h), reads the SSE stream and times it.
// Blocking; the socket gives up after `timeout_s` without data (DeadlineExceeded). A non-200
// status is Unavailable with the response body in the message.
absl::StatusOr<StreamTiming> StreamCompletion(int port, const std::string& path,
                                              const std::string& body, double timeout_s);

}  // namespace moeserve::bench

#endif  // MOESERVE_BENCH_SSE_CLIENT_H_
