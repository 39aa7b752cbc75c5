#include "bench/sse_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Closes the socket on every return path.
class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Incremental decoder of an HTTP/1.1 response carrying an SSE stream.
class ResponseReader {
 public:
  explicit ResponseReader(StreamTiming* timing) : timing_(timing) {}

  // Feeds bytes received `now` seconds after the start.
  absl::Status Feed(absl::string_view bytes, double now) {
    now_ = now;
    if (!headers_done_) {
      head_.append(bytes.data(), bytes.size());
      size_t end = head_.find("\r\n\r\n");
      if (end == std::string::npos) return absl::OkStatus();
      absl::Status st = ParseHeaders(absl::string_view(head_).substr(0, end));
      if (!st.ok()) return st;
      headers_done_ = true;
      std::string rest = head_.substr(end + 4);
      head_.clear();
      return FeedBody(rest);
    }
    return FeedBody(bytes);
  }

  bool done() const { return done_; }
  int status() const { return status_; }
  const std::string& error_body() const { return sse_; }

 private:
  absl::Status ParseHeaders(absl::string_view head) {
    // "HTTP/1.1 200 OK"
    size_t sp = head.find(' ');
    if (sp == absl::string_view::npos) return absl::InternalError("bad status line");
    status_ = std::atoi(std::string(head.substr(sp + 1, 3)).c_str());
    std::string lower(head);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    chunked_ = lower.find("transfer-encoding: chunked") != std::string::npos;
    return absl::OkStatus();
  }

  absl::Status FeedBody(absl::string_view bytes) {
    if (!chunked_) return FeedSse(bytes);
    chunk_buf_.append(bytes.data(), bytes.size());
    size_t pos = 0;
    while (!done_) {
      if (chunk_left_ < 0) {  // expecting a size line
        size_t eol = chunk_buf_.find("\r\n", pos);
        if (eol == std::string::npos) break;
        char* end = nullptr;
        std::string line = chunk_buf_.substr(pos, eol - pos);
        long size = std::strtol(line.c_str(), &end, 16);
        if (end == line.c_str() || size < 0) return absl::InternalError("bad chunk size");
        pos = eol + 2;
        if (size == 0) {
          done_ = true;
          break;
        }
        chunk_left_ = size;
      } else {
        // Chunk data followed by CRLF.
        if (chunk_buf_.size() - pos < static_cast<size_t>(chunk_left_) + 2) break;
        absl::Status st = FeedSse(absl::string_view(chunk_buf_).substr(pos, chunk_left_));
        if (!st.ok()) return st;
        pos += static_cast<size_t>(chunk_left_) + 2;
        chunk_left_ = -1;
      }
    }
    chunk_buf_.erase(0, pos);
    return absl::OkStatus();
  }

  absl::Status FeedSse(absl::string_view bytes) {
    sse_.append(bytes.data(), bytes.size());
    if (status_ != 200) return absl::OkStatus();  // keep the error body for the message
    size_t pos = 0;
    for (size_t eol; (eol = sse_.find('\n', pos)) != std::string::npos; pos = eol + 1) {
      absl::string_view line = absl::string_view(sse_).substr(pos, eol - pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.substr(0, 5) != "data:") continue;
      line.remove_prefix(5);
      while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      absl::Status st = OnEvent(line);
      if (!st.ok()) return st;
    }
    sse_.erase(0, pos);
    return absl::OkStatus();
  }

  absl::Status OnEvent(absl::string_view data) {
    if (data == "[DONE]") {
      done_ = true;
      timing_->e2e = now_;
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
      if (timing_->token_times.empty()) timing_->ttft = now_;
      timing_->token_times.push_back(now_);
    }
    auto usage = j.find("usage");
    if (usage != j.end() && usage->is_object()) {
      timing_->output_tokens = usage->value("completion_tokens", int64_t{0});
      timing_->prompt_tokens = usage->value("prompt_tokens", int64_t{0});
      timing_->cached_tokens = usage->value("prompt_cache_hit_tokens", int64_t{0});
      got_usage_ = true;
    }
    return absl::OkStatus();
  }

 public:
  bool got_usage() const { return got_usage_; }

 private:
  StreamTiming* timing_;
  double now_ = 0;
  bool headers_done_ = false;
  bool chunked_ = false;
  bool done_ = false;
  bool got_usage_ = false;
  int status_ = 0;
  std::string head_;
  std::string chunk_buf_;
  long chunk_left_ = -1;
  std::string sse_;
};

}  // namespace

absl::StatusOr<StreamTiming> StreamCompletion(int port, const std::string& path,
                                              const std::string& body, double timeout_s) {
  const Clock::time_point start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  Socket sock(socket(AF_INET, SOCK_STREAM, 0));
  if (sock.fd() < 0) return absl::InternalError("socket() failed");
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout_s);
  tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
  setsockopt(sock.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(sock.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  setsockopt(sock.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(sock.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect to port ", port, ": ", strerror(errno)));
  }
  const std::string request =
      absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: 127.0.0.1:", port,
                   "\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
                   "Connection: close\r\nContent-Length: ",
                   body.size(), "\r\n\r\n", body);
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = send(sock.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }
  StreamTiming timing;
  ResponseReader reader(&timing);
  char buf[16384];
  while (!reader.done()) {
    ssize_t n = recv(sock.fd(), buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::DeadlineExceededError(absl::StrCat("no data for ", timeout_s, " s"));
    }
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    const double now = elapsed();
    if (n == 0) {
      if (timing.e2e == 0) timing.e2e = now;
      break;
    }
    absl::Status st = reader.Feed(absl::string_view(buf, static_cast<size_t>(n)), now);
    if (!st.ok()) return st;
  }
  if (reader.status() != 200) {
    return absl::UnavailableError(
        absl::StrCat("HTTP ", reader.status(), ": ", reader.error_body().substr(0, 500)));
  }
  if (timing.e2e == 0) timing.e2e = elapsed();
  if (!reader.got_usage()) timing.output_tokens = static_cast<int64_t>(timing.token_times.size());
  if (timing.token_times.empty()) return absl::InternalError("the stream carried no tokens");
  return timing;
}

}  // namespace moeserve::bench
