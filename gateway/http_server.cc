#include "gateway/http_server.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "common/http_status.h"
#include "common/log.h"
#include "gateway/http_session.h"

namespace moeserve::gateway {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct HttpServer::Impl {
  explicit Impl(int threads)
      : ioc(threads), acceptor(asio::make_strand(ioc)), sweep_timer(asio::make_strand(ioc)) {}

  void Accept() {
    acceptor.async_accept(asio::make_strand(ioc),
                          [this](boost::system::error_code ec, tcp::socket socket) {
                            if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
                            if (!ec) {
                              std::make_shared<HttpSession>(std::move(socket), context)->Start();
                            }
                            Accept();
                          });
  }

  // Resumable streams left without a reader past the grace period are dropped (and their
  // generations cancelled) by a sweep every tenth of the grace period (50 ms to 1 s).
  void Sweep() {
    StreamRegistry* streams = context.streams;
    const absl::Duration every =
        std::clamp(streams->options().grace / 10, absl::Milliseconds(50), absl::Seconds(1));
    sweep_timer.expires_after(absl::ToChronoNanoseconds(every));
    sweep_timer.async_wait([this, streams](boost::system::error_code ec) {
      if (ec) return;
      const size_t expired = streams->Sweep();
      context.metrics->SetStreamState(streams->detached(), expired);
      Sweep();
    });
  }

  asio::io_context ioc;
  tcp::acceptor acceptor;
  asio::steady_timer sweep_timer;
  SessionContext context;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                               SessionContext context) {
  if (options.threads <= 0) return absl::InvalidArgumentError("http threads must be > 0");
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->impl_ = std::make_unique<Impl>(options.threads);
  Impl& impl = *server->impl_;
  impl.context = context;
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("bad http host '", options.host, "'"));
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  impl.acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl.acceptor.bind(endpoint, ec);
  if (!ec) impl.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("gateway: cannot listen on ", options.host, ":",
                                               options.port, ": ", ec.message()));
  }
  server->port_ = impl.acceptor.local_endpoint().port();
  impl.Accept();
  if (context.streams != nullptr && context.streams->enabled()) impl.Sweep();
  for (int i = 0; i < options.threads; ++i) {
    server->threads_.emplace_back([&impl] { impl.ioc.run(); });
  }
  return server;
}

HttpServer::~HttpServer() { Shutdown(); }

void HttpServer::Shutdown() {
  if (shut_down_ || impl_ == nullptr) return;
  shut_down_ = true;
  asio::dispatch(impl_->acceptor.get_executor(), [this] {
    boost::system::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  asio::dispatch(impl_->sweep_timer.get_executor(), [this] { impl_->sweep_timer.cancel(); });
  // Generations in flight end with Cancelled. Their callbacks post onto this io_context, so it
  // must outlive them: wait until every backend call has run on_done.
  if (!impl_->context.calls->CancelAllAndWait(absl::Seconds(10))) {
    LogLine("W", "gateway: generations still running at shutdown");
  }
  impl_->ioc.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

}  // namespace moeserve::gateway
