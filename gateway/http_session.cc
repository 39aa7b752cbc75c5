#include "gateway/http_session.h"

#include <algorithm>
#include <chrono>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/write.hpp"
#include "common/http_status.h"
#include "gateway/static_files.h"
#include "gateway/tokenize_api.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// How long an idle keep-alive connection (or a slow request upload) may take.
constexpr auto kReadTimeout = std::chrono::seconds(120);

std::string ChunkFrame(absl::string_view data) {
  return absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n");
}

// The Batch API: /v1/files[/...] and /v1/batches[/...].
bool IsBatchApiPath(absl::string_view path) {
  return path == "/v1/files" || absl::StartsWith(path, "/v1/files/") || path == "/v1/batches" ||
         absl::StartsWith(path, "/v1/batches/");
}

// Routes that need an API key when keys are on (the page, /health and /v1/prices stay open).
bool NeedsKey(absl::string_view path) {
  return path == "/v1/models" || absl::StartsWith(path, "/v1/models/") ||
         path == "/v1/chat/completions" || path == "/v1/completions" || path == "/tokenize" ||
         path == "/detokenize" || path == "/admin/usage" || IsBatchApiPath(path);
}

// A resumable stream's URL: /v1/chat/completions/{id}/stream (GET, resume) or .../cancel
// (POST), the same under /v1/completions and the /beta twins.
struct StreamPath {
  std::string route;  // the generation's endpoint, "/v1/chat/completions" or "/v1/completions"
  std::string id;
  bool cancel = false;
};

std::optional<StreamPath> ParseStreamPath(absl::string_view path) {
  if (!absl::ConsumePrefix(&path, "/v1/") && !absl::ConsumePrefix(&path, "/beta/")) {
    return std::nullopt;
  }
  StreamPath sp;
  if (absl::ConsumePrefix(&path, "chat/completions/")) {
    sp.route = "/v1/chat/completions";
  } else if (absl::ConsumePrefix(&path, "completions/")) {
    sp.route = "/v1/completions";
  } else {
    return std::nullopt;
  }
  const size_t slash = path.find('/');
  if (slash == absl::string_view::npos || slash == 0) return std::nullopt;
  const absl::string_view action = path.substr(slash + 1);
  if (action != "stream" && action != "cancel") return std::nullopt;
  sp.id = std::string(path.substr(0, slash));
  sp.cancel = action == "cancel";
  return sp;
}

}  // namespace

HttpSession::HttpSession(asio::ip::tcp::socket&& socket, SessionContext context)
    : stream_(std::move(socket)),
      keepalive_timer_(stream_.get_executor()),
      context_(context) {}

void HttpSession::Start() {
  asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
}

void HttpSession::DoRead() {
  if (closed_) return;
  parser_.emplace();
  parser_->body_limit(kMaxBodyBytes);
  stream_.expires_after(kReadTimeout);
  http::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

// curl and other clients send "Expect: 100-continue" before a large body and wait for the
// interim response; answer it, then read the body.
void HttpSession::OnHeader(beast::error_code ec) {
  if (ec) return OnRead(ec);
  auto read_body = [self = shared_from_this()] {
    http::async_read(self->stream_, self->buffer_, *self->parser_,
                     [self](beast::error_code e, size_t) { self->OnRead(e); });
  };
  if (parser_->is_done()) return OnRead(ec);
  // File uploads may be larger than other requests: up to the Batch API's file limit (plus room
  // for the multipart framing and the other fields).
  if (context_.batches != nullptr &&
      absl::StartsWith(absl::string_view(parser_->get().target().data(),
                                         parser_->get().target().size()),
                       "/v1/files")) {
    parser_->body_limit(std::max<uint64_t>(kMaxBodyBytes,
                                           context_.batches->options().max_file_bytes + 65536));
  }
  if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
    auto line = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
    asio::async_write(stream_, asio::buffer(*line),
                      [self = shared_from_this(), line, read_body](beast::error_code e, size_t) {
                        if (e) return self->OnRead(e);
                        read_body();
                      });
    return;
  }
  read_body();
}

void HttpSession::OnRead(beast::error_code ec) {
  if (ec == http::error::body_limit) {
    keep_alive_ = false;
    const bool upload = context_.batches != nullptr && parser_ &&
                        absl::StartsWith(absl::string_view(parser_->get().target().data(),
                                                           parser_->get().target().size()),
                                         "/v1/files");
    SendError(absl::InvalidArgumentError(absl::StrCat(
                  "request body exceeds ",
                  upload ? context_.batches->options().max_file_bytes + 65536 : kMaxBodyBytes,
                  " bytes", upload ? " (the file limit is --batch-max-file-mb)" : "")),
              413);
    return;
  }
  if (ec == http::error::end_of_stream || ec) {
    if (ec && ec != http::error::end_of_stream && ec != beast::error::timeout &&
        ec != asio::error::operation_aborted && ec != asio::error::connection_reset &&
        ec != asio::error::eof && parser_ && parser_->got_some()) {
      keep_alive_ = false;
      SendError(absl::InvalidArgumentError(absl::StrCat("malformed HTTP request: ", ec.message())));
      return;
    }
    Close();
    return;
  }
  stream_.expires_never();
  Handle(parser_->release());
}

void HttpSession::Handle(Request request) {
  keep_alive_ = request.keep_alive();
  response_done_ = false;
  std::string path(request.target());
  if (const size_t q = path.find('?'); q != std::string::npos) path.resize(q);
  // DeepSeek's beta base URL (FIM, chat prefix completion) serves the same API.
  if (path == "/beta/chat/completions" || path == "/beta/completions" || path == "/beta/models") {
    path.replace(0, 5, "/v1");
  }
  const http::verb method = request.method();
  std::optional<Principal> principal;
  const std::optional<StreamPath> stream_path = ParseStreamPath(path);
  if (context_.keys != nullptr && (NeedsKey(path) || stream_path)) {
    const beast::string_view auth = request[http::field::authorization];
    absl::StatusOr<Principal> p =
        context_.keys->Authenticate(absl::string_view(auth.data(), auth.size()));
    if (!p.ok()) return SendError(p.status());
    principal = *std::move(p);
  }
  if (path == "/admin/usage") return HandleAdminUsage(principal, method);
  if (IsBatchApiPath(path)) return HandleBatchApi(request, path, principal);
  route_ = path == "/health" || path == "/healthz" || path == "/readyz" ||
                   path == "/v1/models" || path == "/v1/prices" ||
                   path == "/v1/chat/completions" || path == "/v1/completions" ||
                   path == "/tokenize" || path == "/detokenize"
               ? path
           : absl::StartsWith(path, "/v1/models/") ? "/v1/models/{id}"
                                                   : "other";
  const bool draining = context_.calls->draining();
  if (draining) keep_alive_ = false;  // clients reconnect, to another replica
  // Liveness (/health, /healthz): the process answers. Readiness (/readyz): it takes new
  // requests; 503 from the first SIGTERM on, while the requests in flight finish.
  if (path == "/health" || path == "/healthz") {
    if (method != http::verb::get)
      return SendError(absl::InvalidArgumentError("use GET"), 405, "GET");
    return SendJson(http::status::ok, R"({"status":"ok"})", keep_alive_);
  }
  if (path == "/readyz") {
    if (method != http::verb::get)
      return SendError(absl::InvalidArgumentError("use GET"), 405, "GET");
    return draining ? SendJson(http::status::service_unavailable, R"({"status":"draining"})",
                               keep_alive_)
                    : SendJson(http::status::ok, R"({"status":"ready"})", keep_alive_);
  }
  if (path == "/v1/models") {
    if (method != http::verb::get)
      return SendError(absl::InvalidArgumentError("use GET"), 405, "GET");
    return SendJson(http::status::ok,
                    DumpJson(ModelsJson(context_.model->name, 0, context_.model->context_length)),
                    keep_alive_);
  }
  if (absl::StartsWith(path, "/v1/models/")) {
    // OpenAI's models.retrieve: this server's one model, or 404 model_not_found.
    if (method != http::verb::get)
      return SendError(absl::InvalidArgumentError("use GET"), 405, "GET");
    const std::string id = path.substr(std::string("/v1/models/").size());
    if (id != context_.model->name) return SendError(ModelNotFound(id, *context_.model));
    return SendJson(http::status::ok,
                    DumpJson(ModelsJson(context_.model->name, 0,
                                        context_.model->context_length)["data"][0]),
                    keep_alive_);
  }
  if (path == "/tokenize" || path == "/detokenize") {
    if (method != http::verb::post) {
      return SendError(absl::InvalidArgumentError("use POST"), 405, "POST");
    }
    absl::StatusOr<nlohmann::ordered_json> out =
        path == "/tokenize" ? TokenizeResponse(request.body(), *context_.model)
                            : DetokenizeResponse(request.body(), *context_.model);
    if (!out.ok()) return SendError(out.status());
    return SendJson(http::status::ok,
                    out->dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace),
                    keep_alive_);
  }
  if (path == "/v1/prices") {
    if (method != http::verb::get)
      return SendError(absl::InvalidArgumentError("use GET"), 405, "GET");
    return SendJson(http::status::ok,
                    context_.prices->PricesJson({context_.model->name})
                        .dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace),
                    keep_alive_);
  }
  if (path == "/v1/chat/completions" || path == "/v1/completions") {
    if (method != http::verb::post) {
      return SendError(absl::InvalidArgumentError("use POST"), 405, "POST");
    }
    return HandleGenerate(
        request, path == "/v1/completions" ? Endpoint::kCompletion : Endpoint::kChat, principal);
  }
  if (stream_path) {
    route_ =
        absl::StrCat(stream_path->route, stream_path->cancel ? "/{id}/cancel" : "/{id}/stream");
    const std::string owner = principal ? absl::StrCat("key ", principal->index) : "";
    if (stream_path->cancel) {
      if (method != http::verb::post) {
        return SendError(absl::InvalidArgumentError("use POST"), 405, "POST");
      }
      return HandleStreamCancel(stream_path->route, stream_path->id, owner);
    }
    if (method != http::verb::get) {
      return SendError(absl::InvalidArgumentError("use GET"), 405, "GET");
    }
    return HandleStreamResume(request, stream_path->route, stream_path->id, owner);
  }
  if (const StaticFile* file = FindStaticFile(path)) {
    if (method != http::verb::get && method != http::verb::head) {
      return SendError(absl::InvalidArgumentError("use GET"), 405, "GET, HEAD");
    }
    return SendStatic(*file, std::string(request[http::field::if_none_match]),
                      method == http::verb::head);
  }
  SendError(absl::NotFoundError(
      absl::StrCat("no route for ", std::string(request.method_string()), " ", path)));
}

// An embedded playground file. The ETag lets a browser revalidate (304) instead of fetching
// the bytes again; no-cache makes it revalidate after a gateway upgrade.
void HttpSession::SendStatic(const StaticFile& file, absl::string_view if_none_match,
                             bool head_only) {
  const bool not_modified = !if_none_match.empty() &&
                            (if_none_match == "*" || absl::StrContains(if_none_match, file.etag));
  Response res{not_modified ? http::status::not_modified : http::status::ok, 11};
  res.set(http::field::server, "moeserve-gateway");
  res.set(http::field::etag, std::string(file.etag));
  res.set(http::field::cache_control, "no-cache");
  res.set("Content-Security-Policy", std::string(kStaticContentSecurityPolicy));
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  res.keep_alive(keep_alive_);
  if (!not_modified) {
    res.set(http::field::content_type, std::string(file.content_type));
    res.content_length(file.body.size());
    if (!head_only) res.body() = std::string(file.body);
  }
  std::ostringstream os;
  os << res;
  response_done_ = true;
  QueueWrite(os.str());
}

// Usage and cost per API key, for an admin key (keys.json "admin": true).
void HttpSession::HandleAdminUsage(const std::optional<Principal>& principal, http::verb method) {
  if (context_.keys == nullptr) {
    return SendError(absl::NotFoundError(
        "the admin API needs API keys: start the gateway with --api-keys FILE"));
  }
  if (!principal->admin) {
    return SendError(WithErrorCode(
        absl::PermissionDeniedError("this API key is not an admin key (\"admin\": true)"),
        "not_admin"));
  }
  if (method != http::verb::get) {
    return SendError(absl::InvalidArgumentError("use GET"), 405, "GET");
  }
  SendJson(http::status::ok,
           context_.keys->UsageJson(context_.prices->currency())
               .dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace),
           keep_alive_);
}

void HttpSession::HandleGenerate(const Request& request, Endpoint endpoint,
                                 const std::optional<Principal>& principal) {
  if (context_.calls->draining()) {
    return SendError(absl::UnavailableError(
        "the gateway is shutting down and takes no new requests; retry (another replica)"));
  }
  // X-Request-Timeout: seconds the client will wait; past it the generation stops everywhere
  // (router, workers) and the answer is 504 (or an error event once streaming).
  std::optional<absl::Duration> timeout;
  if (const beast::string_view t = request["X-Request-Timeout"]; !t.empty()) {
    double seconds = 0;
    if (!absl::SimpleAtod(absl::string_view(t.data(), t.size()), &seconds) ||
        !(seconds > 0 && seconds <= 86400)) {
      return SendError(absl::InvalidArgumentError(
          "X-Request-Timeout must be a number of seconds in (0, 86400]"));
    }
    timeout = absl::Seconds(seconds);
  }
  absl::StatusOr<ApiRequest> api = endpoint == Endpoint::kChat
                                       ? ParseChatCompletionRequest(request.body())
                                       : ParseCompletionRequest(request.body());
  if (!api.ok()) return SendError(api.status());
  const std::string id =
      context_.calls->NextRequestId(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  absl::StatusOr<std::vector<PreparedRequest>> batch = PrepareBatch(*api, *context_.model, id);
  if (!batch.ok()) return SendError(batch.status());
  if (principal) {
    // Quotas count requests that would run, so a malformed one costs the client nothing.
    if (absl::Status admitted = context_.keys->Admit(*principal); !admitted.ok()) {
      return SendError(admitted);
    }
    // The tier's priority is the best this key gets; a request may ask for a lower one.
    for (PreparedRequest& p : *batch) {
      p.generation.priority = std::max(p.generation.priority, principal->priority);
    }
  }
  PreparedRequest* prepared = &batch->front();  // what every prompt shares

  Generation& g = gen_.emplace();
  g.hold.emplace(context_.calls);
  g.seq = ++next_seq_;
  g.stream = prepared->stream;
  g.meta.id = id;
  g.meta.created = absl::ToUnixSeconds(absl::Now());
  g.meta.model = prepared->model;
  g.meta.endpoint = endpoint;
  g.meta.split_reasoning = prepared->split_reasoning;
  g.meta.include_usage = prepared->include_usage;
  g.meta.logprobs = prepared->generation.sampling.logprobs;
  g.n = static_cast<size_t>(std::max(prepared->n, 1));
  g.choices.resize(batch->size() * g.n);
  for (size_t i = 0; i < g.choices.size(); ++i) {
    g.choices[i].output.emplace(
        MakeOutputAssembler(*context_.model->tokenizer, (*batch)[i / g.n]));
  }
  const beast::string_view authorization = request[http::field::authorization];
  g.metrics.emplace(context_.metrics, route_, context_.model->name,
                    context_.metrics->ApiKeyLabel(
                        absl::string_view(authorization.data(), authorization.size())),
                    g.stream);
  if (principal) {
    g.metrics->OnFinish([keys = context_.keys, p = *principal](const UsageInfo& usage,
                                                                double cost) {
      keys->Record(p, usage, cost);
    });
  }
  for (PreparedRequest& p : *batch) {
    g.requests.push_back(std::move(p.generation));
    if (timeout) g.requests.back().deadline = absl::Now() + *timeout;
  }
  g.prompt_scores.resize(g.requests.size());
  g.show_prompt_logprobs = api->show_prompt_logprobs;
  if (g.stream && context_.streams != nullptr && context_.streams->enabled()) {
    OpenResumableStream(principal ? absl::StrCat("key ", principal->index) : "");
  }
  for (size_t i = 0; i < g.choices.size(); i += g.n) StartChoice(i);
  WatchPeer();
  if (g.stream) ArmKeepAlive();
}

// Callbacks run on a backend thread: post onto this connection's strand. The registry entry is
// removed last, after which the callback no longer touches the io_context.
void HttpSession::StartChoice(size_t index) {
  Generation& g = *gen_;
  // The client is gone: nobody would read it (and nothing would cancel it), unless the stream
  // goes on for a resume.
  if (closed_ && !g.headless) return;
  auto executor = stream_.get_executor();
  CallRegistry* calls = context_.calls;
  const uint64_t seq = g.seq;
  const uint64_t key = calls->Reserve();
  GenerationCallbacks callbacks;
  callbacks.on_chunk = [self = shared_from_this(), executor, seq, index](GenerationChunk chunk) {
    asio::post(executor, [self, seq, index, chunk = std::move(chunk)]() mutable {
      self->OnChunk(seq, index, std::move(chunk));
    });
  };
  callbacks.on_done = [self = shared_from_this(), executor, seq, index, calls,
                       key](absl::Status s) {
    asio::post(executor, [self, seq, index, s = std::move(s)] { self->OnDone(seq, index, s); });
    calls->Remove(key);
  };
  GenerationRequest request = ChoiceRequest(g.requests[index / g.n], static_cast<int>(index % g.n));
  // The prompt's scores come from its choice 0 (OnChunk), so the others take the prefix cache.
  if (index % g.n != 0) request.prompt_logprobs.reset();
  GenerationCallPtr call = context_.backend->Start(std::move(request), std::move(callbacks));
  g.choices[index].call = call;
  calls->Attach(key, std::move(call));
}

// n > 1: a prompt's other choices start once its first one has been prefilled (its first
// chunk, or its end), so that they find the prompt's full blocks in the KV cache instead of each
// computing them again.
void HttpSession::OnChunk(uint64_t seq, size_t index, GenerationChunk chunk) {
  if (!gen_ || gen_->seq != seq || gen_->done) return;
  if (!gen_->first_chunk) {
    gen_->first_chunk = true;
    keepalive_timer_.cancel();
  }
  if (index % gen_->n == 0) {
    for (size_t i = index + 1; i < index + gen_->n; ++i) {
      if (gen_->choices[i].call == nullptr) StartChoice(i);
    }
  }
  Choice& c = gen_->choices[index];
  if (gen_->requests[index / gen_->n].prompt_logprobs && !c.chunked) {
    std::vector<engine::SampleResult>& scores = gen_->prompt_scores[index / gen_->n];
    if (index % gen_->n == 0) {
      scores = chunk.prompt_logprobs;
    } else {
      chunk.prompt_logprobs = scores;
    }
  }
  c.chunked = true;
  if (c.done) return;
  TextDelta delta = c.output->OnChunk(chunk);
  gen_->metrics->OnTokens(static_cast<int64_t>(chunk.token_ids.size()), TotalUsage());
  EmitDelta(index, delta);
  if (c.output->finished()) {
    // A stop string, or the backend's last chunk: either way nothing more is wanted.
    if (c.output->stopped_by_string()) c.call->Cancel();
    FinishChoice(index, FinishReason::kStop);
  }
}

void HttpSession::OnDone(uint64_t seq, size_t index, absl::Status status) {
  if (!gen_ || gen_->seq != seq || gen_->done || gen_->choices[index].done) return;
  // OK without a finish reason chunk counts as a natural stop.
  if (status.ok() || gen_->choices[index].output->finished()) {
    FinishChoice(index, FinishReason::kStop);
    return;
  }
  FinishGeneration(std::move(status));
}

void HttpSession::SendStreamHeader() {
  Generation& g = *gen_;
  if (g.headers_sent) return;
  g.headers_sent = true;
  QueueWrite(absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                          "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
                          g.resumable ? absl::StrCat("X-Moeserve-Stream-Id: ", g.meta.id, "\r\n")
                                      : std::string(),
                          keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n",
                          "\r\n"));
}

// While a stream waits for its first token (queued behind busier work, or a long prefill), an
// SSE comment every `sse_keepalive` keeps proxies and clients from timing the connection out.
// SSE parsers (the OpenAI SDKs included) ignore comment lines. Once sent, the 200 is committed:
// a later failure arrives as an error event, as it would mid-stream.
void HttpSession::ArmKeepAlive() {
  if (context_.sse_keepalive <= absl::ZeroDuration()) return;
  keepalive_timer_.expires_after(absl::ToChronoNanoseconds(context_.sse_keepalive));
  keepalive_timer_.async_wait([self = shared_from_this(), seq = gen_->seq](beast::error_code ec) {
    if (ec || self->closed_ || !self->gen_ || self->gen_->seq != seq || self->gen_->done ||
        self->gen_->first_chunk) {
      return;
    }
    self->SendStreamHeader();
    self->QueueWrite(ChunkFrame(": keep-alive\n\n"));
    self->ArmKeepAlive();
  });
}

void HttpSession::EmitDelta(size_t index, const TextDelta& delta) {
  Generation& g = *gen_;
  if (!g.stream) {
    g.choices[index].text.Append(delta);
    return;
  }
  SendStreamHeader();
  if (!g.roles_sent) {
    g.roles_sent = true;
    if (g.meta.endpoint == Endpoint::kChat) {
      for (size_t i = 0; i < g.choices.size(); ++i) {
        SendEvent(SseEvent(RoleChunkJson(g.meta, static_cast<int>(i))));
      }
    }
  }
  if (!delta.empty()) {
    SendEvent(SseEvent(DeltaChunkJson(g.meta, delta, static_cast<int>(index))));
  }
}

void HttpSession::FinishChoice(size_t index, FinishReason reason) {
  Generation& g = *gen_;
  Choice& c = g.choices[index];
  if (c.done) return;
  c.done = true;
  if (index % g.n == 0) {
    for (size_t i = index + 1; i < index + g.n; ++i) {
      if (g.choices[i].call == nullptr) StartChoice(i);
    }
  }
  EmitDelta(index, c.output->Finish(reason));
  if (g.stream) {
    SendEvent(
        SseEvent(FinishChunkJson(g.meta, c.output->finish_reason(), static_cast<int>(index))));
  }
  for (const Choice& other : g.choices) {
    if (!other.done) return;
  }
  FinishGeneration(absl::OkStatus());
}

// Usage: the prompt once, the completions of every choice.
UsageInfo HttpSession::TotalUsage() const {
  const Generation& g = *gen_;
  // Each prompt counts once (its first choice's prompt and cache hits), every choice's output.
  UsageInfo usage;
  for (size_t i = 0; i < g.choices.size(); ++i) {
    const UsageInfo& u = g.choices[i].output->usage();
    if (i % g.n == 0) {
      usage.prompt_tokens += u.prompt_tokens;
      usage.cached_tokens += u.cached_tokens;
    }
    usage.completion_tokens += u.completion_tokens;
    usage.reasoning_tokens += u.reasoning_tokens;
  }
  return usage;
}

// The whole response ends: every choice finished (OK), or one failed (the others are cancelled).
void HttpSession::FinishGeneration(absl::Status status) {
  Generation& g = *gen_;
  g.done = true;
  keepalive_timer_.cancel();
  for (Choice& c : g.choices) {
    if (!c.done && c.call != nullptr) c.call->Cancel();
  }
  if (g.cancelled_here && absl::IsCancelled(status)) {
    status = absl::CancelledError(
        "the stream was cancelled: POST .../cancel, or no client resumed it within the grace "
        "period");
  }
  const bool error = !status.ok();
  // A closed connection or a Cancelled generation is the client going away (499); a stream
  // that went on without its connection (resume) ends as it ends.
  const bool gone = closed_ && !g.headless;
  g.metrics->Finish(gone ? 499 : (error ? HttpStatusCode(status.code()) : 200), TotalUsage(),
                    gone || (error && absl::IsCancelled(status)));
  if (gone) return;
  if (error && !g.headers_sent && !closed_) {
    // Nothing went out yet: an ordinary error response (and nothing to resume).
    if (g.resumable) context_.streams->Remove(g.resumable);
    if (status.code() == absl::StatusCode::kCancelled) keep_alive_ = false;
    SendError(status);
    return;
  }
  const UsageInfo usage = TotalUsage();
  if (!g.stream) {
    std::vector<ChoiceResult> results;
    for (Choice& c : g.choices) results.push_back({std::move(c.text), c.output->finish_reason()});
    nlohmann::json response = CompletionResponseJson(g.meta, results, usage);
    if (g.show_prompt_logprobs) {
      // vLLM's places: on the chat response, on each completion choice (its prompt's).
      auto scores = [&](size_t prompt) {
        return PromptLogprobsJson(g.requests[prompt].prompt_ids, g.prompt_scores[prompt],
                                  *context_.model->tokenizer);
      };
      if (g.meta.endpoint == Endpoint::kChat) {
        response["prompt_logprobs"] = scores(0);
      } else {
        for (nlohmann::json& choice : response["choices"]) {
          choice["prompt_logprobs"] = scores(choice["index"].get<size_t>() / g.n);
        }
      }
    }
    SendJson(http::status::ok, DumpJson(response),
             keep_alive_);
    return;
  }
  if (!status.ok()) {
    // Mid-stream failure: what each choice held back, an error event (the OpenAI SDK raises
    // it), then the end.
    for (size_t i = 0; i < g.choices.size(); ++i) {
      if (!g.choices[i].done) EmitDelta(i, g.choices[i].output->Finish(FinishReason::kNone));
    }
    SendEvent(absl::StrCat("data: ", OpenAiErrorBody(status), "\n\n"));
  } else if (g.meta.include_usage) {
    SendEvent(SseEvent(UsageChunkJson(g.meta, usage)));
  }
  SendEvent(SseDone());
  if (g.resumable) g.resumable->Finish();
  QueueWrite("0\r\n\r\n");
  response_done_ = true;
  DoWrite();
}

void HttpSession::SendJson(http::status status, std::string body, bool keep_alive,
                           const char* allow, int retry_after_s) {
  SendBody(status, "application/json", std::move(body), keep_alive, allow, retry_after_s);
}

void HttpSession::SendBody(http::status status, const char* content_type, std::string body,
                           bool keep_alive, const char* allow, int retry_after_s) {
  if (!gen_ || !gen_->metrics) {
    context_.metrics->CountResponse(route_, context_.model->name, static_cast<int>(status));
  }
  Response res{status, 11};
  res.set(http::field::server, "moeserve-gateway");
  res.set(http::field::content_type, content_type);
  if (allow != nullptr) res.set(http::field::allow, allow);
  if (retry_after_s > 0) res.set(http::field::retry_after, std::to_string(retry_after_s));
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  std::ostringstream os;
  os << res;  // serialise to bytes so every response goes through the one write queue
  response_done_ = true;
  QueueWrite(os.str());
}

void HttpSession::SendError(const absl::Status& status, int http_status, const char* allow) {
  const int code = http_status != 0 ? http_status : HttpStatusCode(status.code());
  // Every 429 (overload here, quotas elsewhere) tells the client when to come back.
  SendJson(static_cast<http::status>(code), OpenAiErrorBody(status, code), keep_alive_, allow,
           code == 429 ? RetryAfterSeconds(status) : 0);
}

void HttpSession::QueueWrite(std::string bytes) {
  if (closed_) return;
  // Bytes queued behind the write in flight are merged, so a slow reader costs one buffer (at
  // most the response itself, which max_tokens bounds) and one write per round trip.
  if (out_.size() >= 2) {
    out_.back() += bytes;
  } else {
    out_.push_back(std::move(bytes));
  }
  DoWrite();
}

void HttpSession::DoWrite() {
  if (writing_ || closed_) return;
  if (out_.empty()) {
    if (!response_done_) return;
    // The response is out: the next request (keep-alive) or the end of the connection.
    response_done_ = false;
    // The end went out: nothing is left to resume.
    if (gen_ && gen_->resumable) {
      context_.streams->Release(gen_->resumable, ResumableStream::kProducerToken);
    }
    if (reader_) context_.streams->Release(reader_->stream, reader_->token);
    gen_.reset();
    reader_.reset();
    if (!keep_alive_) {
      beast::error_code ignored;
      stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
      Close();
    } else if (watching_) {
      stream_.socket().cancel();  // the watch handler then starts the next read
    } else {
      DoRead();
    }
    return;
  }
  writing_ = true;
  asio::async_write(
      stream_, asio::buffer(out_.front()),
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWritten(ec); });
}

void HttpSession::OnWritten(beast::error_code ec) {
  writing_ = false;
  out_.pop_front();
  if (closed_) {
    out_.clear();
    return;
  }
  if (ec) {
    ClientGone();
    return;
  }
  DoWrite();
}

// While a generation runs nothing is read from the client, so a read is kept pending to notice
// it closing the connection (EOF or reset). Bytes that arrive (a pipelined request) are kept
// for the next parse.
void HttpSession::WatchPeer() {
  if (watching_ || closed_) return;
  watching_ = true;
  stream_.socket().async_read_some(
      asio::buffer(watch_byte_), [self = shared_from_this()](beast::error_code ec, size_t n) {
        self->watching_ = false;
        if (ec == asio::error::operation_aborted && !self->closed_ && !self->gen_ &&
            !self->reader_) {
          self->DoRead();  // cancelled by DoWrite at the end of the response
          return;
        }
        if (ec) {
          self->ClientGone();
          return;
        }
        auto dest = self->buffer_.prepare(n);
        asio::buffer_copy(dest, asio::buffer(self->watch_byte_, n));
        self->buffer_.commit(n);
        if (self->buffer_.size() > kMaxBodyBytes) {
          self->ClientGone();
          return;
        }
        if (self->gen_ || self->reader_) {
          self->WatchPeer();
        } else if (!self->writing_ && self->out_.empty()) {
          self->DoRead();
        }
      });
}

void HttpSession::ClientGone() {
  if (gen_ && gen_->resumable && !gen_->headless &&
      context_.streams->Detach(gen_->resumable, ResumableStream::kProducerToken)) {
    // Resume on: the generation goes on (or its tail stays readable) for a reconnect within the
    // grace period; the registry cancels it if nobody comes back.
    gen_->headless = true;
  }
  if (gen_ && !gen_->done && !gen_->headless) {
    for (Choice& c : gen_->choices) {
      if (c.call != nullptr) c.call->Cancel();
    }
  }
  if (reader_) context_.streams->Detach(reader_->stream, reader_->token);
  Close();
}

void HttpSession::Close() {
  if (closed_) return;
  closed_ = true;
  keepalive_timer_.cancel();
  if (!writing_) out_.clear();  // else the buffer in flight goes in OnWritten
  beast::error_code ignored;
  stream_.socket().close(ignored);
}

}  // namespace moeserve::gateway
