#ifndef MOESERVE_GATEWAY_HTTP_SESSION_H_
#define MOESERVE_GATEWAY_HTTP_SESSION_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/api_keys.h"
#include "gateway/call_registry.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "gateway/openai_format.h"
#include "gateway/output_assembler.h"
#include "gateway/request_mapping.h"
#include "gateway/session_context.h"
#include "gateway/static_files.h"
#include "gateway/stream_registry.h"

namespace moeserve::gateway {

// One HTTP connection. Everything runs on the connection's strand: reading requests, writing
// responses and handling backend callbacks (which are posted here). Lives as long as a handler
// or a backend callback holds it.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket&& socket, SessionContext context);
  void Start();

 private:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;

  // One choice of the current request (one backend call each).
  struct Choice {
    GenerationCallPtr call;  // null until started
    std::optional<OutputAssembler> output;
    TextDelta text;     // non-streaming: everything so far
    bool done = false;  // finished: its finish chunk went out (streaming) or its result is final
    bool chunked = false;  // a chunk came for it
  };

  // The generation behind the current request: n choices (n > 1 in gen_->choices).
  struct Generation {
    // User-provided so that std::optional<Generation> below sees a default constructor: clang
    // cannot use the default member initializers before the enclosing class is complete.
    Generation() {}
    uint64_t seq = 0;
    ResponseMeta meta;
    // Choice 0's of each prompt (one, unless completions batched several); choice i * n + j
    // is prompt i's choice j and derives its request from requests[i] (ChoiceRequest).
    std::vector<GenerationRequest> requests;
    // A scored prompt (echo with logprobs) is scored by its choice 0 alone: its first chunk's
    // prompt_logprobs, kept here by prompt, serve the prompt's other choices.
    std::vector<std::vector<engine::SampleResult>> prompt_scores;
    bool show_prompt_logprobs = false;  // vLLM's prompt_logprobs in the (non-streamed) response
    size_t n = 1;  // choices per prompt
    std::vector<Choice> choices;
    bool stream = false;
    bool headers_sent = false;  // streaming: the SSE header went out
    bool roles_sent = false;    // streaming chat: the role chunks went out
    bool first_chunk = false;   // a chunk came from the backend (keep-alives stop)
    bool done = false;          // the response is complete (no more events)
    std::optional<RequestMetrics> metrics;
    std::optional<ResponseHold> hold;  // keeps a drain waiting until the response is out
    // Streaming with resume on: every event is numbered and kept for a reconnect.
    ResumableStreamPtr resumable;
    // The client's connection is gone (or a resume took the stream over) but the generation
    // goes on for the stream's reader.
    bool headless = false;
    bool cancelled_here = false;  // by the stream's cancel (explicit, or the grace period over)
  };

  // A resumed stream this connection reads (GET .../{id}/stream): frames come from the
  // producer's connection through the stream's sink.
  struct StreamReader {
    StreamReader() {}  // user-provided, as Generation's: for std::optional under clang
    uint64_t seq = 0;
    ResumableStreamPtr stream;
    uint64_t token = 0;
    std::optional<ResponseHold> hold;
  };

  void DoRead();
  void OnHeader(boost::beast::error_code ec);
  void OnRead(boost::beast::error_code ec);
  void Handle(Request request);
  void HandleGenerate(const Request& request, Endpoint endpoint,
                      const std::optional<Principal>& principal);
  void HandleStreamResume(const Request& request, const std::string& route, const std::string& id,
                          const std::string& owner);
  void HandleStreamCancel(const std::string& route, const std::string& id,
                          const std::string& owner);
  void OpenResumableStream(const std::string& owner);
  void SendEvent(absl::string_view event);  // one SSE event of the current generation
  void CancelGeneration(uint64_t seq);
  void OnSuperseded(uint64_t seq);
  void OnReaderFrame(uint64_t seq, std::string frame);
  void OnReaderEnd(uint64_t seq);
  // /v1/files and /v1/batches (http_session_batch.cc).
  void HandleBatchApi(const Request& request, const std::string& path,
                      const std::optional<Principal>& principal);
  void HandleAdminUsage(const std::optional<Principal>& principal, boost::beast::http::verb method);
  // `retry_after_s` > 0 adds a Retry-After header (every 429 has one; see SendError).
  void SendJson(boost::beast::http::status status, std::string body, bool keep_alive,
                const char* allow = nullptr, int retry_after_s = 0);
  // A whole (non-streamed) response of any content type; SendJson is this with JSON.
  void SendBody(boost::beast::http::status status, const char* content_type, std::string body,
                bool keep_alive, const char* allow = nullptr, int retry_after_s = 0);
  void SendError(const absl::Status& status, int http_status = 0, const char* allow = nullptr);
  void SendStatic(const StaticFile& file, absl::string_view if_none_match, bool head_only);
  void StartChoice(size_t index);
  void OnChunk(uint64_t seq, size_t index, GenerationChunk chunk);
  void OnDone(uint64_t seq, size_t index, absl::Status status);
  void SendStreamHeader();
  void ArmKeepAlive();
  void EmitDelta(size_t index, const TextDelta& delta);
  void FinishChoice(size_t index, FinishReason reason);
  UsageInfo TotalUsage() const;  // over every choice of the current generation
  void FinishGeneration(absl::Status status);
  void QueueWrite(std::string bytes);
  void DoWrite();
  void OnWritten(boost::beast::error_code ec);
  void WatchPeer();
  void ClientGone();
  void Close();

  boost::beast::tcp_stream stream_;
  boost::asio::steady_timer keepalive_timer_;  // SSE comments while a stream waits for a token
  SessionContext context_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  bool keep_alive_ = false;
  std::string route_;  // the metrics label of the request being answered
  uint64_t next_seq_ = 0;
  std::optional<Generation> gen_;
  std::optional<StreamReader> reader_;
  std::deque<std::string> out_;  // raw bytes queued for the socket
  bool writing_ = false;
  bool watching_ = false;       // a read that detects the peer closing is pending
  bool response_done_ = false;  // every byte of the current response is queued
  bool closed_ = false;
  char watch_byte_[512];
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_HTTP_SESSION_H_
