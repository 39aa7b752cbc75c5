#include "common/http_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moeserve {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kPollMs = 50;
// Bounds what a misbehaving server can make us buffer.
constexpr size_t kMaxHeadBytes = 64 << 10;
constexpr size_t kMaxBodyBytes = 64 << 20;

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

bool Cancelled(const HttpRequest& r) { return r.cancel != nullptr && r.cancel->load(); }

absl::StatusOr<int> Connect(const HttpUrl& server, const HttpRequest& request) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(server.port);
  if (const int rc = getaddrinfo(server.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve '", server.host, "': ", gai_strerror(rc)));
  }
  std::string last_error = "no address";
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    int rc;
    do {
      rc = connect(fd, a->ai_addr, a->ai_addrlen);
    } while (rc != 0 && errno == EINTR && !Cancelled(request));
    if (rc != 0) {
      last_error = strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (Cancelled(request)) {
    if (fd >= 0) close(fd);
    return absl::CancelledError("cancelled");
  }
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", server.host, ":", server.port, ": ", last_error));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Decodes an HTTP/1.1 response as bytes arrive: the head, then the body
// (chunked, by length, or up to the end of the connection), then SSE events
// when the body is an event stream.
class ResponseDecoder {
 public:
  ResponseDecoder(HttpResponse* out, const SseHandler* on_event) : out_(out), on_event_(on_event) {}

  absl::Status Feed(absl::string_view bytes) {
    if (!head_done_) {
      head_.append(bytes.data(), bytes.size());
      const size_t end = head_.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (head_.size() > kMaxHeadBytes) return absl::InternalError("response head too large");
        return absl::OkStatus();
      }
      const std::string rest = head_.substr(end + 4);
      if (absl::Status st = ParseHead(absl::string_view(head_).substr(0, end)); !st.ok()) {
        return st;
      }
      head_done_ = true;
      head_.clear();
      return FeedBody(rest);
    }
    return FeedBody(bytes);
  }

  // The connection ended: fine when the body runs to the end of the connection.
  absl::Status Eof() {
    if (done_) return absl::OkStatus();
    if (!head_done_) return absl::UnavailableError("the connection closed before a response");
    if (chunked_ || content_length_ >= 0) {
      return absl::UnavailableError("the connection closed in the middle of the response");
    }
    done_ = true;
    return FlushSse();
  }

  bool done() const { return done_; }

 private:
  absl::Status ParseHead(absl::string_view head) {
    std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
    absl::string_view status_line = lines[0];
    if (!absl::ConsumePrefix(&status_line, "HTTP/1.") || status_line.size() < 5 ||
        !absl::SimpleAtoi(status_line.substr(2, 3), &out_->status)) {
      return absl::InternalError(absl::StrCat("not an HTTP/1.x response: '", lines[0], "'"));
    }
    for (size_t i = 1; i < lines.size(); ++i) {
      const size_t colon = lines[i].find(':');
      if (colon == absl::string_view::npos) continue;
      const std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
      const absl::string_view value = absl::StripAsciiWhitespace(lines[i].substr(colon + 1));
      if (name == "content-type") {
        out_->content_type = std::string(value);
      } else if (name == "transfer-encoding") {
        chunked_ = absl::StrContains(absl::AsciiStrToLower(value), "chunked");
      } else if (name == "content-length") {
        int64_t n = 0;
        if (!absl::SimpleAtoi(value, &n) || n < 0) {
          return absl::InternalError(absl::StrCat("bad Content-Length '", value, "'"));
        }
        content_length_ = n;
      }
    }
    if (chunked_) content_length_ = -1;
    sse_ = on_event_ != nullptr && *on_event_ && out_->status / 100 == 2 &&
           absl::StartsWithIgnoreCase(out_->content_type, "text/event-stream");
    if (content_length_ == 0 || out_->status == 204 || out_->status == 304) done_ = true;
    return absl::OkStatus();
  }

  absl::Status FeedBody(absl::string_view bytes) {
    if (done_) return absl::OkStatus();
    if (!chunked_) {
      if (content_length_ >= 0) {
        const size_t left = static_cast<size_t>(content_length_ - received_);
        if (bytes.size() >= left) {
          bytes = bytes.substr(0, left);
          done_ = true;
        }
        received_ += static_cast<int64_t>(bytes.size());
      }
      absl::Status st = Body(bytes);
      if (st.ok() && done_) st = FlushSse();
      return st;
    }
    chunk_buf_.append(bytes.data(), bytes.size());
    size_t pos = 0;
    while (!done_) {
      if (chunk_left_ < 0) {  // a size line
        const size_t eol = chunk_buf_.find("\r\n", pos);
        if (eol == std::string::npos) break;
        absl::string_view line = absl::string_view(chunk_buf_).substr(pos, eol - pos);
        if (const size_t semi = line.find(';'); semi != absl::string_view::npos) {
          line = line.substr(0, semi);  // chunk extensions
        }
        uint64_t size = 0;
        if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(line), &size) || size > kMaxBodyBytes) {
          return absl::InternalError(absl::StrCat("bad chunk size line '", line, "'"));
        }
        pos = eol + 2;
        if (size == 0) {
          done_ = true;  // trailers, if any, are not read
          break;
        }
        chunk_left_ = static_cast<int64_t>(size);
      } else {
        if (chunk_buf_.size() - pos < static_cast<size_t>(chunk_left_) + 2) break;
        absl::Status st = Body(absl::string_view(chunk_buf_).substr(pos, chunk_left_));
        if (!st.ok()) return st;
        pos += static_cast<size_t>(chunk_left_) + 2;
        chunk_left_ = -1;
      }
    }
    chunk_buf_.erase(0, pos);
    return done_ ? FlushSse() : absl::OkStatus();
  }

  absl::Status Body(absl::string_view bytes) {
    if (!sse_) {
      if (out_->body.size() + bytes.size() > kMaxBodyBytes) {
        return absl::InternalError("response body too large");
      }
      out_->body.append(bytes.data(), bytes.size());
      return absl::OkStatus();
    }
    sse_buf_.append(bytes.data(), bytes.size());
    size_t pos = 0;
    for (size_t eol; (eol = sse_buf_.find('\n', pos)) != std::string::npos; pos = eol + 1) {
      absl::string_view line = absl::string_view(sse_buf_).substr(pos, eol - pos);
      absl::ConsumeSuffix(&line, "\r");
      if (absl::Status st = SseLine(line); !st.ok()) return st;
    }
    sse_buf_.erase(0, pos);
    if (sse_buf_.size() > kMaxBodyBytes) return absl::InternalError("SSE line too long");
    return absl::OkStatus();
  }

  // One line of an event stream: "data:" lines gather, a blank line dispatches;
  // comments
  // (":...") and other fields (event, id, retry) are ignored.
  absl::Status SseLine(absl::string_view line) {
    if (line.empty()) return FlushSse();
    if (!absl::ConsumePrefix(&line, "data")) return absl::OkStatus();
    if (!line.empty() && line.front() != ':') return absl::OkStatus();  // "database: ..."
    absl::ConsumePrefix(&line, ":");
    absl::ConsumePrefix(&line, " ");
    if (has_data_) event_.push_back('\n');
    event_.append(line.data(), line.size());
    has_data_ = true;
    return absl::OkStatus();
  }

  absl::Status FlushSse() {
    if (!has_data_) return absl::OkStatus();
    has_data_ = false;
    std::string data = std::move(event_);
    event_.clear();
    return (*on_event_)(data);
  }

  HttpResponse* out_;
  const SseHandler* on_event_;
  bool head_done_ = false;
  bool chunked_ = false;
  bool sse_ = false;
  bool done_ = false;
  int64_t content_length_ = -1;  // -1: to the end of the connection (or chunked)
  int64_t received_ = 0;
  std::string head_;
  std::string chunk_buf_;
  int64_t chunk_left_ = -1;
  std::string sse_buf_;
  std::string event_;
  bool has_data_ = false;
};

absl::Status SendAll(int fd, const std::string& bytes, const HttpRequest& request) {
  for (size_t sent = 0; sent < bytes.size();) {
    if (Cancelled(request)) return absl::CancelledError("cancelled");
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", url, "' is not an http:// URL (https is not supported)"));
  }
  HttpUrl out;
  const size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  if (slash != absl::string_view::npos) {
    absl::string_view path = rest.substr(slash);
    while (absl::ConsumeSuffix(&path, "/")) {
    }
    out.path = std::string(path);
  }
  absl::string_view host = authority;
  absl::string_view port;
  if (absl::ConsumePrefix(&host, "[")) {  // [v6]:port
    const size_t close = host.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", url, "': unclosed '['"));
    }
    absl::string_view after = host.substr(close + 1);
    host = host.substr(0, close);
    if (!after.empty() && !absl::ConsumePrefix(&after, ":")) {
      return absl::InvalidArgumentError(absl::StrCat("'", url, "': bad host"));
    }
    port = after;
  } else if (const size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (host.empty() || absl::StrContains(host, "@")) {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' has no host"));
  }
  out.host = std::string(host);
  if (!port.empty() && (!absl::SimpleAtoi(port, &out.port) || out.port < 1 || out.port > 65535)) {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "': bad port '", port, "'"));
  }
  return out;
}

absl::StatusOr<HttpResponse> SendHttp(const HttpUrl& server, const HttpRequest& request,
                                      const SseHandler& on_event) {
  absl::StatusOr<int> fd = Connect(server, request);
  if (!fd.ok()) return fd.status();
  Socket sock(*fd);
  const bool ipv6 = absl::StrContains(server.host, ":");
  std::string bytes =
      absl::StrCat(request.method, " ", request.target, " HTTP/1.1\r\nHost: ", ipv6 ? "[" : "",
                   server.host, ipv6 ? "]" : "", ":", server.port, "\r\nConnection: close\r\n");
  for (const auto& [name, value] : request.headers)
    absl::StrAppend(&bytes, name, ": ", value, "\r\n");
  if (!request.body.empty() || request.method == "POST") {
    absl::StrAppend(&bytes, "Content-Length: ", request.body.size(), "\r\n");
  }
  absl::StrAppend(&bytes, "\r\n", request.body);
  if (absl::Status st = SendAll(sock.fd(), bytes, request); !st.ok()) return st;

  HttpResponse response;
  ResponseDecoder decoder(&response, &on_event);
  Clock::time_point last_data = Clock::now();
  char buf[16384];
  while (!decoder.done()) {
    if (Cancelled(request)) return absl::CancelledError("cancelled");
    pollfd p{sock.fd(), POLLIN, 0};
    const int ready = poll(&p, 1, kPollMs);
    if (ready < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("poll: ", strerror(errno)));
    }
    if (ready <= 0) {
      const double idle = std::chrono::duration<double>(Clock::now() - last_data).count();
      if (idle > request.idle_timeout_s) {
        return absl::DeadlineExceededError(absl::StrCat("no answer from ", server.host, ":",
                                                        server.port, " for ",
                                                        request.idle_timeout_s, " s"));
      }
      continue;
    }
    const ssize_t n = recv(sock.fd(), buf, sizeof(buf), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    if (n == 0) {
      if (absl::Status st = decoder.Eof(); !st.ok()) return st;
      break;
    }
    last_data = Clock::now();
    if (absl::Status st = decoder.Feed(absl::string_view(buf, static_cast<size_t>(n))); !st.ok()) {
      return st;
    }
  }
  return response;
}

}  // namespace moeserve
