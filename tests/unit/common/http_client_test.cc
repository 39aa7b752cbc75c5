#include "common/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

// A one-connection HTTP server on 127.0.0.1: reads the request (head and
// Content-Length body), then writes `pieces` one write at a time and closes,
// unless `hold_open`, when it waits for the client to close and records that it
// did.
class ScriptedServer {
 public:
  ScriptedServer(std::vector<std::string> pieces, bool hold_open = false)
      : pieces_(std::move(pieces)), hold_open_(hold_open) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listen_fd_, 1);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    WaitDone();
    close(listen_fd_);
  }
  int port() const { return port_; }
  // Valid after the client call returned (the request is read before anything
  // is written).
  const std::string& request() const { return request_; }
  bool saw_client_close() const { return client_closed_.load(); }
  void WaitDone() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Serve() {
    const int fd = accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    char buf[4096];
    while (true) {
      const size_t head_end = request_.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        size_t want = 0;
        const size_t cl = request_.find("Content-Length: ");
        if (cl != std::string::npos) want = std::stoul(request_.substr(cl + 16));
        if (request_.size() >= head_end + 4 + want) break;
      }
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request_.append(buf, static_cast<size_t>(n));
    }
    for (const std::string& p : pieces_) {
      if (send(fd, p.data(), p.size(), MSG_NOSIGNAL) < 0) break;
    }
    if (hold_open_) {
      while (recv(fd, buf, sizeof(buf), 0) > 0) {
      }
      client_closed_ = true;
    }
    close(fd);
  }

  std::vector<std::string> pieces_;
  bool hold_open_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::string request_;
  std::atomic<bool> client_closed_{false};
  std::thread thread_;
};

std::vector<std::string> Bytewise(const std::string& s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

std::string Chunked(const std::vector<std::string>& chunks) {
  std::string out;
  for (const std::string& c : chunks) absl::StrAppend(&out, absl::Hex(c.size()), "\r\n", c, "\r\n");
  return out + "0\r\n\r\n";
}

constexpr char kSseHead[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
    "chunked\r\n\r\n";

TEST(ParseHttpUrlTest, AcceptsHostPortAndPath) {
  absl::StatusOr<HttpUrl> u = ParseHttpUrl("http://127.0.0.1:8000/v1/");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8000);
  EXPECT_EQ(u->path, "/v1");
  u = ParseHttpUrl("http://localhost");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->path, "");
  u = ParseHttpUrl("http://[::1]:9000/api");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 9000);
}

TEST(ParseHttpUrlTest, RejectsWhatItCannotServe) {
  for (const char* bad : {"https://x", "127.0.0.1:8000", "http://", "http://:80", "http://h:0",
                          "http://h:99999", "http://h:port", "http://[::1", "http://u@h"}) {
    absl::StatusOr<HttpUrl> u = ParseHttpUrl(bad);
    EXPECT_EQ(u.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(SendHttpTest, DeliversSseEventsSplitAcrossEveryByte) {
  const std::string body = Chunked({"data: {\"a\":1}\n\n: a comment\n",
                                    "data: two\r\ndata: lines\n\n", "event: x\ndata: [DONE]\n\n"});
  ScriptedServer server(Bytewise(kSseHead + body));
  std::vector<std::string> events;
  HttpRequest req;
  req.method = "POST";
  req.target = "/v1/chat/completions";
  req.headers = {{"Authorization", "Bearer sk-1"}};
  req.body = R"({"stream":true})";
  absl::StatusOr<HttpResponse> r =
      SendHttp({"127.0.0.1", server.port(), ""}, req, [&](absl::string_view data) {
        events.emplace_back(data);
        return absl::OkStatus();
      });
  server.WaitDone();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");
  EXPECT_EQ(events, (std::vector<std::string>{"{\"a\":1}", "two\nlines", "[DONE]"}));
  EXPECT_TRUE(absl::StartsWith(server.request(), "POST /v1/chat/completions HTTP/1.1\r\n"));
  EXPECT_TRUE(absl::StrContains(server.request(), "\r\nAuthorization: Bearer sk-1\r\n"));
  EXPECT_TRUE(absl::StrContains(server.request(), "\r\nContent-Length: 15\r\n"));
  EXPECT_TRUE(absl::EndsWith(server.request(), "\r\n\r\n{\"stream\":true}"));
}

TEST(SendHttpTest, ErrorStatusReturnsTheBodyNotEvents) {
  const std::string err = R"({"error":{"message":"bad key"}})";
  ScriptedServer server(
      {absl::StrCat("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json"
                    "\r\nContent-Length: ",
                    err.size(), "\r\n\r\n", err)});
  int events = 0;
  absl::StatusOr<HttpResponse> r =
      SendHttp({"127.0.0.1", server.port(), ""}, HttpRequest{}, [&](absl::string_view) {
        ++events;
        return absl::OkStatus();
      });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->content_type, "application/json");
  EXPECT_EQ(r->body, err);
  EXPECT_EQ(events, 0);
}

TEST(SendHttpTest, BodyToTheEndOfTheConnection) {
  ScriptedServer server({"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ", "world"});
  absl::StatusOr<HttpResponse> r = SendHttp({"127.0.0.1", server.port(), ""}, HttpRequest{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->body, "hello world");
}

TEST(SendHttpTest, TruncatedOrMalformedResponsesAreErrors) {
  {
    ScriptedServer server({"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"});
    EXPECT_EQ(SendHttp({"127.0.0.1", server.port(), ""}, HttpRequest{}).status().code(),
              absl::StatusCode::kUnavailable);
  }
  {
    ScriptedServer server({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"});
    EXPECT_EQ(SendHttp({"127.0.0.1", server.port(), ""}, HttpRequest{}).status().code(),
              absl::StatusCode::kInternal);
  }
  {
    ScriptedServer server({"SSH-2.0-OpenSSH\r\n\r\n"});
    EXPECT_EQ(SendHttp({"127.0.0.1", server.port(), ""}, HttpRequest{}).status().code(),
              absl::StatusCode::kInternal);
  }
}

TEST(SendHttpTest, HandlerErrorStopsTheTransfer) {
  ScriptedServer server({kSseHead, Chunked({"data: 1\n\n"})},
                        /*hold_open=*/true);
  absl::StatusOr<HttpResponse> r =
      SendHttp({"127.0.0.1", server.port(), ""}, HttpRequest{},
               [](absl::string_view) { return absl::AbortedError("enough"); });
  server.WaitDone();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(server.saw_client_close());
}

TEST(SendHttpTest, CancelClosesTheConnection) {
  // The server sends one event and then nothing: only the cancel flag ends the
  // call.
  ScriptedServer server({kSseHead, "9\r\ndata: 1\n\n\r\n"}, /*hold_open=*/true);
  std::atomic<bool> cancel{false};
  HttpRequest req;
  req.cancel = &cancel;
  int events = 0;
  absl::StatusOr<HttpResponse> r =
      SendHttp({"127.0.0.1", server.port(), ""}, req, [&](absl::string_view) {
        ++events;
        cancel = true;  // as a Ctrl-C handler would, from outside the stream
        return absl::OkStatus();
      });
  server.WaitDone();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(events, 1);
  EXPECT_TRUE(server.saw_client_close());
}

TEST(SendHttpTest, NobodyListeningIsUnavailable) {
  int port = 0;
  {
    ScriptedServer server({"HTTP/1.1 204 No Content\r\n\r\n"});
    port = server.port();
    absl::StatusOr<HttpResponse> r = SendHttp({"127.0.0.1", port, ""}, HttpRequest{});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, 204);
  }
  EXPECT_EQ(SendHttp({"127.0.0.1", port, ""}, HttpRequest{}).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace moeserve
