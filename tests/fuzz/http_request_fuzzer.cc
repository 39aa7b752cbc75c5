// libFuzzer target: the gateway's HTTP/1.1 server (Boost.Beast parsing in gateway/http_session.cc,
// routing, the JSON request mapping, SSE streaming) end to end, in process: one HttpServer on
// 127.0.0.1 over the test model and a fake backend; each input is written raw to a fresh
// connection, whose write side is then closed, and the answer read until the server closes.
// Properties: no crash (ASan/UBSan in the server's threads); the server always closes the
// connection (no hang); when it answers, the first bytes are an HTTP/1.1 status line, never a
// 5xx (the backend never fails, so any 5xx is a gateway bug).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gateway/http_server.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/gateway_fixture.h"

namespace {

using moeserve::fuzz::GatewayFixture;

int Port() {
  static const int port = [] {
    GatewayFixture& f = GatewayFixture::Get();
    moeserve::gateway::HttpServerOptions options;
    options.host = "127.0.0.1";
    options.threads = 2;
    absl::StatusOr<std::unique_ptr<moeserve::gateway::HttpServer>> server =
        moeserve::gateway::HttpServer::Create(
            options, moeserve::gateway::SessionContext{f.model.get(), f.backend.get(), &f.calls,
                                                       f.prices.get(), f.metrics.get()});
    if (!server.ok()) {
      std::fprintf(stderr, "http_request_fuzzer: %s\n", server.status().ToString().c_str());
      std::abort();
    }
    // Never destroyed (it serves until the process exits); held by a static so that
    // LeakSanitizer's check at exit does not report it.
    static moeserve::gateway::HttpServer* kept = server->release();
    return kept->Port();
  }();
  return port;
}

// Sends `request`, half-closes, returns everything the server wrote before closing.
std::string Exchange(int port, absl::string_view request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  MOESERVE_FUZZ_ASSERT(fd >= 0, std::strerror(errno));
  // A server that neither answers nor closes within this long is hung (it read all input and
  // saw end of file); generous because the machine is shared.
  timeval tv{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  MOESERVE_FUZZ_ASSERT(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
                       std::strerror(errno));
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server closed early (e.g. after a 400); read what it said
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  char buf[16384];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      answer.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == ECONNRESET) break;
    MOESERVE_FUZZ_ASSERT(n == 0, absl::StrCat("the server neither answered nor closed: ",
                                              std::strerror(errno)));
    break;
  }
  ::close(fd);
  return answer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string answer = Exchange(Port(), moeserve::fuzz::AsText(data, size));
  if (answer.empty()) return 0;  // nothing parsed, or the client was seen leaving
  MOESERVE_FUZZ_ASSERT(answer.rfind("HTTP/1.1 ", 0) == 0, answer.substr(0, 64));
  MOESERVE_FUZZ_ASSERT(answer.size() >= 12 && answer[9] != '5', answer.substr(0, 200));
  return 0;
}
