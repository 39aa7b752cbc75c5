// HttpSession's resumable streams (see "Resumable streams" in docs/DESIGN-NOTES.md): numbering
// and keeping the events of a streamed generation, a reconnect that resumes it
// (GET .../{id}/stream with Last-Event-ID), and an explicit cancel (POST .../{id}/cancel).
#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "boost/asio/post.hpp"
#include "gateway/http_session.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

std::string ChunkFrame(absl::string_view data) {
  return absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n");
}

// Request ids are letters, digits and dashes; anything else names no stream (and is not
// echoed back).
bool PlausibleStreamId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// A decimal event id: digits only, fits in 64 bits.
std::optional<uint64_t> ParseEventId(absl::string_view text) {
  uint64_t v = 0;
  if (text.empty() || text.size() > 20 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(text, &v)) {
    return std::nullopt;
  }
  return v;
}

// Where a reconnecting reader resumes: after the SSE Last-Event-ID header, or after the query's
// `starting_after` (the OpenAI Responses API's name); when both are given they must agree.
// Neither: from the first event.
absl::StatusOr<uint64_t> ResumePosition(absl::string_view last_event_id, absl::string_view target) {
  std::optional<uint64_t> header, query;
  if (!last_event_id.empty()) {
    header = ParseEventId(absl::StripAsciiWhitespace(last_event_id));
    if (!header) {
      return absl::InvalidArgumentError(
          "Last-Event-ID must be the decimal id of an event of this stream");
    }
  }
  if (const size_t q = target.find('?'); q != absl::string_view::npos) {
    for (absl::string_view param : absl::StrSplit(target.substr(q + 1), '&')) {
      if (!absl::ConsumePrefix(&param, "starting_after=")) continue;
      query = ParseEventId(param);
      if (!query) {
        return absl::InvalidArgumentError(
            "starting_after must be the decimal id of an event of this stream");
      }
    }
  }
  if (header && query && *header != *query) {
    return absl::InvalidArgumentError("Last-Event-ID and starting_after differ");
  }
  return header ? *header : query.value_or(0);
}

}  // namespace

// The stream is cancelled (grace over, or an explicit cancel) and superseded (a reconnect took
// it over while this connection still looked open) through posts onto this strand. The
// registry holds only weak references to the session and no executor: a finished session is
// not kept alive by it, and nothing in it outlives the io_context (a strand executor must not).
void HttpSession::OpenResumableStream(const std::string& owner) {
  Generation& g = *gen_;
  std::weak_ptr<HttpSession> weak = weak_from_this();
  const uint64_t seq = g.seq;
  auto cancel = [weak, seq] {
    if (std::shared_ptr<HttpSession> self = weak.lock()) {
      asio::post(self->stream_.get_executor(), [self, seq] { self->CancelGeneration(seq); });
    }
  };
  StreamSink producer;
  producer.on_superseded = [weak, seq] {
    if (std::shared_ptr<HttpSession> self = weak.lock()) {
      asio::post(self->stream_.get_executor(), [self, seq] { self->OnSuperseded(seq); });
    }
  };
  g.resumable = context_.streams->Open(
      g.meta.id, owner,
      g.meta.endpoint == Endpoint::kChat ? "/v1/chat/completions" : "/v1/completions",
      std::move(cancel), std::move(producer));
}

void HttpSession::SendEvent(absl::string_view event) {
  ResumableStream* stream = gen_->resumable.get();
  if (stream == nullptr) return QueueWrite(ChunkFrame(event));
  bool to_producer = false;
  const std::string frame = stream->Publish(event, &to_producer);
  if (to_producer) QueueWrite(ChunkFrame(frame));
}

void HttpSession::CancelGeneration(uint64_t seq) {
  if (!gen_ || gen_->seq != seq || gen_->done) return;
  gen_->cancelled_here = true;
  for (Choice& c : gen_->choices) {
    if (c.call != nullptr) c.call->Cancel();
  }
}

// Another connection resumed the stream this one was writing (the producer's, or an earlier
// reader's): stop writing, leave the generation running.
void HttpSession::OnSuperseded(uint64_t seq) {
  if (gen_ && gen_->seq == seq) {
    gen_->headless = true;
  } else if (!reader_ || reader_->seq != seq) {
    return;
  }
  Close();
}

void HttpSession::HandleStreamResume(const Request& request, const std::string& route,
                                     const std::string& id, const std::string& owner) {
  if (context_.streams == nullptr || !context_.streams->enabled()) {
    return SendError(absl::NotFoundError(
        "streams are not resumable on this gateway (--stream-resume-grace-s 0)"));
  }
  const boost::beast::string_view last_event_id = request["Last-Event-ID"];
  const boost::beast::string_view target = request.target();
  absl::StatusOr<uint64_t> last =
      ResumePosition(absl::string_view(last_event_id.data(), last_event_id.size()),
                     absl::string_view(target.data(), target.size()));
  if (!last.ok()) {
    context_.metrics->CountStreamResume("invalid");
    return SendError(last.status());
  }
  if (!PlausibleStreamId(id)) {
    context_.metrics->CountStreamResume("not_found");
    return SendError(absl::NotFoundError("no resumable stream with that id"));
  }
  const uint64_t seq = ++next_seq_;
  std::weak_ptr<HttpSession> weak = weak_from_this();
  StreamSink sink;
  sink.on_frame = [weak, seq](std::string frame) {
    if (std::shared_ptr<HttpSession> self = weak.lock()) {
      asio::post(self->stream_.get_executor(), [self, seq, frame = std::move(frame)]() mutable {
        self->OnReaderFrame(seq, std::move(frame));
      });
    }
  };
  sink.on_end = [weak, seq] {
    if (std::shared_ptr<HttpSession> self = weak.lock()) {
      asio::post(self->stream_.get_executor(), [self, seq] { self->OnReaderEnd(seq); });
    }
  };
  sink.on_superseded = [weak, seq] {
    if (std::shared_ptr<HttpSession> self = weak.lock()) {
      asio::post(self->stream_.get_executor(), [self, seq] { self->OnSuperseded(seq); });
    }
  };
  absl::StatusOr<StreamAttachment> a =
      context_.streams->Attach(id, owner, route, *last, std::move(sink));
  if (!a.ok()) {
    context_.metrics->CountStreamResume(absl::IsInvalidArgument(a.status()) ? "invalid"
                                                                            : "not_found");
    return SendError(a.status());
  }
  context_.metrics->CountStreamResume("resumed");
  context_.metrics->CountResponse(route_, context_.model->name, 200);
  StreamReader& r = reader_.emplace();
  r.seq = seq;
  r.stream = a->stream;
  r.token = a->token;
  r.hold.emplace(context_.calls);
  std::string bytes = absl::StrCat(
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "Transfer-Encoding: chunked\r\nX-Moeserve-Stream-Id: ",
      id, "\r\n", keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n", "\r\n");
  for (const std::string& frame : a->frames) absl::StrAppend(&bytes, ChunkFrame(frame));
  if (a->finished) {
    absl::StrAppend(&bytes, "0\r\n\r\n");
    response_done_ = true;
  }
  QueueWrite(std::move(bytes));
  if (!a->finished) WatchPeer();
}

void HttpSession::OnReaderFrame(uint64_t seq, std::string frame) {
  if (!reader_ || reader_->seq != seq) return;
  QueueWrite(ChunkFrame(frame));
}

void HttpSession::OnReaderEnd(uint64_t seq) {
  if (!reader_ || reader_->seq != seq) return;
  response_done_ = true;
  QueueWrite("0\r\n\r\n");
}

void HttpSession::HandleStreamCancel(const std::string& route, const std::string& id,
                                     const std::string& owner) {
  if (context_.streams == nullptr || !context_.streams->enabled()) {
    return SendError(absl::NotFoundError(
        "streams are not resumable on this gateway (--stream-resume-grace-s 0); closing the "
        "connection cancels a stream"));
  }
  if (!PlausibleStreamId(id)) {
    return SendError(absl::NotFoundError("no resumable stream with that id"));
  }
  if (absl::Status s = context_.streams->Cancel(id, owner, route); !s.ok()) return SendError(s);
  nlohmann::ordered_json body = {{"id", id}, {"object", "stream.cancel"}, {"cancelled", true}};
  SendJson(http::status::ok, body.dump(), keep_alive_);
}

}  // namespace moeserve::gateway
