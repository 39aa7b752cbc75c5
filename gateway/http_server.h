#ifndef MOESERVE_GATEWAY_HTTP_SERVER_H_
#define MOESERVE_GATEWAY_HTTP_SERVER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/call_registry.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "gateway/session_context.h"

namespace moeserve::gateway {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;     // 0: any free port (read back with Port())
  int threads = 2;  // Asio threads; every connection is a strand, so a few serve thousands
};

// The OpenAI-compatible HTTP/1.1 server (Boost.Beast on Asio, fully asynchronous):
//   GET /health, GET /v1/models, GET /v1/prices, POST /v1/chat/completions, POST /v1/completions,
// and the playground (gateway/web, compiled in) at GET / and its files.
// Keep-alive; streaming answers are Server-Sent Events over chunked transfer encoding. Handlers
// never block: backend callbacks are posted onto the connection's strand. A client that closes
// its connection while a generation runs cancels it (GenerationCall::Cancel), unless streams are
// resumable (context.streams): then a stream goes on for a reconnect (GET
// /v1/chat/completions/{id}/stream with Last-Event-ID) until the grace period ends, and POST
// .../{id}/cancel cancels it at once. Errors use the
// OpenAI error body of common/http_status.h; bodies over kMaxBodyBytes get 413, a known path
// with the wrong method 405, an unknown path 404.
//
// What `context` points to is not owned and must outlive the server.
class HttpServer {
 public:
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                            SessionContext context);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int Port() const { return port_; }
  // Stops accepting, cancels generations in flight, joins the threads. Idempotent.
  void Shutdown();

 private:
  struct Impl;
  HttpServer() = default;

  std::unique_ptr<Impl> impl_;
  std::vector<std::thread> threads_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_HTTP_SERVER_H_
