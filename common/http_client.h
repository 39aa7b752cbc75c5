#ifndef MOESERVE_COMMON_HTTP_CLIENT_H_
#define MOESERVE_COMMON_HTTP_CLIENT_H_

#include <atomic>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// A small blocking HTTP/1.1 client for tools that talk to the gateway
// (`moeserve chat`, the serving benchmark): plain http, one request per
// connection (Connection: close), bodies as strings, and Server-Sent Events
// handed over one at a time as they arrive. Not for services: it blocks the
// calling thread. Thread-compatible; keeps no state between calls.
namespace moeserve {

struct HttpUrl {
  std::string host;  // "127.0.0.1", "localhost", "[::1]" without the brackets
  int port = 80;
  std::string path;  // "/v1" (never a trailing '/'); "" when the URL has none
};

// "http://HOST[:PORT][/PATH]". Anything else (https, no host, a bad port) is
// InvalidArgument.
absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url);

struct HttpRequest {
  std::string method = "GET";
  std::string target;  // "/v1/models"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // sent with Content-Length when non-empty or the method is POST
  // The longest wait for any byte from the server before giving up
  // (DeadlineExceeded).
  double idle_timeout_s = 300;
  // Polled while waiting (every 50 ms, and at once when a signal interrupts a
  // wait). When it reads true the connection is closed, which the gateway takes
  // as the client going away, and the call returns Cancelled. Not owned; may be
  // null.
  const std::atomic<bool>* cancel = nullptr;
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  // The whole body, except for a 2xx text/event-stream answer given to an event
  // handler (then empty: the handler saw every event).
  std::string body;
};

// Receives the data of one Server-Sent Event ("data: X" lines, joined by '\n'
// when an event has several). A non-OK status stops the transfer (the
// connection is closed) and is returned.
using SseHandler = std::function<absl::Status(absl::string_view data)>;

// Sends `request` to `server` and reads the answer to the end. A 2xx
// text/event-stream answer goes to `on_event` (when given) as it arrives; any
// other status still returns OK with the body (the caller decides what a 4xx
// means). Errors: Unavailable (cannot resolve, connect or send; the connection
// broke), DeadlineExceeded (idle timeout), Cancelled (request.cancel), Internal
// (not HTTP/1.x, a malformed chunked body), or the handler's status.
absl::StatusOr<HttpResponse> SendHttp(const HttpUrl& server, const HttpRequest& request,
                                      const SseHandler& on_event = nullptr);

}  // namespace moeserve

#endif  // MOESERVE_COMMON_HTTP_CLIENT_H_
