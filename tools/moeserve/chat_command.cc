// moeserve chat: an interactive terminal chat against a running gateway. Reasoning streams dim,
// the answer in normal text; Ctrl-C stops the reply in progress (the connection is closed, then
// the gateway is asked to cancel the generation) and the program carries on; Ctrl-D or /quit
// leaves.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/http_client.h"
#include "common/log.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/chat_session.h"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"

namespace moeserve::cli {
namespace {

using Json = nlohmann::json;

constexpr char kHelp[] =
    "Type a message and press Enter. Commands:\n"
    "  /effort [low|medium|high|default]  show or set the reasoning effort\n"
    "  /system [TEXT]                     set the system prompt (no text: remove it)\n"
    "  /max-tokens [N|default]            show or set the reply's token limit\n"
    "  /reset                             forget the conversation so far\n"
    "  /help                              this text\n"
    "  /quit                              leave (so does Ctrl-D)\n"
    "Ctrl-C stops the reply in progress.\n";

std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void OnInterrupt(int) { g_interrupted = true; }

void Write(absl::string_view text) {
  if (text.empty()) return;
  fwrite(text.data(), 1, text.size(), stdout);
  fflush(stdout);
}

// Lines from standard input, read with read(2) so that Ctrl-C (SIGINT, installed without
// SA_RESTART) interrupts the wait instead of being retried.
class LineReader {
 public:
  enum class Result { kLine, kInterrupted, kEof };

  Result Read(std::string* line) {
    while (true) {
      if (const size_t nl = pending_.find('\n'); nl != std::string::npos) {
        *line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        return Result::kLine;
      }
      char buf[4096];
      const ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) {
        if (g_interrupted.exchange(false)) {
          pending_.clear();
          return Result::kInterrupted;
        }
        continue;
      }
      if (n <= 0) {
        if (pending_.empty()) return Result::kEof;
        *line = std::move(pending_);
        pending_.clear();
        return Result::kLine;
      }
      pending_.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  std::string pending_;
};

// An API error body ({"error": {"message": ...}}) in plain words.
std::string DescribeHttpError(int status, const std::string& body) {
  Json j = Json::parse(body, nullptr, false);
  std::string message;
  if (j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].value("message", Json()).is_string()) {
    message = j["error"]["message"].get<std::string>();
  }
  const std::string said = message.empty() ? "" : absl::StrCat(" The gateway said: ", message);
  std::string what;
  if (status == 400) {
    what = "The gateway did not accept the request.";
  } else if (status == 401) {
    what = "The gateway needs an API key (--api-key or MOESERVE_API_KEY), or did not accept it.";
  } else if (status == 403) {
    what = "This API key is not allowed to do that.";
  } else if (status == 404) {
    what = "Not found: this gateway does not serve that model or path.";
  } else if (status == 429) {
    what = "Too many requests or a limit was reached; wait a moment and try again.";
  } else if (status == 503) {
    what = "The model servers are not available right now.";
  } else if (status >= 500) {
    what = absl::StrCat("The server failed while answering (HTTP ", status, ").");
  } else {
    what = absl::StrCat("The request failed (HTTP ", status, ").");
  }
  return what + said;
}

struct ChatOptions {
  HttpUrl url;
  std::string api_key;
  ChatSettings settings;
  bool color = false;
};

class ChatLoop {
 public:
  explicit ChatLoop(ChatOptions options) : o_(std::move(options)) {}

  // The model list (and the model, when not given) and the price table, if there is one.
  absl::Status Connect() {
    HttpRequest req = Request("GET", "/models", "");
    req.idle_timeout_s = 30;
    req.cancel = &g_interrupted;
    absl::StatusOr<HttpResponse> res = SendHttp(o_.url, req);
    if (!res.ok()) return res.status();
    if (res->status != 200) {
      return absl::UnavailableError(DescribeHttpError(res->status, res->body));
    }
    Json models = Json::parse(res->body, nullptr, false);
    std::vector<std::string> ids;
    if (models.is_object() && models.contains("data") && models["data"].is_array()) {
      for (const Json& m : models["data"]) {
        if (m.is_object() && m.value("id", Json()).is_string()) ids.push_back(m["id"]);
      }
    }
    if (ids.empty()) return absl::FailedPreconditionError("the gateway lists no model");
    if (o_.settings.model.empty()) {
      o_.settings.model = ids[0];
    } else if (std::find(ids.begin(), ids.end(), o_.settings.model) == ids.end()) {
      return absl::NotFoundError(absl::StrCat("the gateway does not serve '", o_.settings.model,
                                              "' (it serves ", absl::StrJoin(ids, ", "), ")"));
    }
    req.target = o_.url.path + "/prices";
    absl::StatusOr<HttpResponse> prices = SendHttp(o_.url, req);
    if (prices.ok() && prices->status == 200) {
      price_ = FindPrice(Json::parse(prices->body, nullptr, false), o_.settings.model);
    }
    return absl::OkStatus();
  }

  void Run() {
    Write(absl::StrCat("moeserve chat: ", o_.settings.model, " at http://", o_.url.host, ":",
                       o_.url.port, o_.url.path, " (reasoning effort ", EffortName(),
                       "). /help lists commands; Ctrl-C stops a reply, Ctrl-D quits.\n"));
    LineReader reader;
    std::string line;
    while (true) {
      Write(o_.color ? "\x1b[1myou>\x1b[0m " : "you> ");
      const LineReader::Result r = reader.Read(&line);
      if (r == LineReader::Result::kEof) {
        Write("\n");
        return;
      }
      if (r == LineReader::Result::kInterrupted) {
        Write("\n(nothing to stop; Ctrl-D or /quit leaves)\n");
        continue;
      }
      const SlashCommand cmd = ParseSlashCommand(line);
      switch (cmd.kind) {
        case SlashCommand::Kind::kNone:
          if (!absl::StripAsciiWhitespace(line).empty()) Turn(line);
          break;
        case SlashCommand::Kind::kReset:
          Note(absl::StrCat("history cleared (", conversation_.turns(), " turns forgotten)"));
          conversation_.Reset();
          break;
        case SlashCommand::Kind::kEffort:
          SetEffort(cmd.arg);
          break;
        case SlashCommand::Kind::kSystem:
          o_.settings.system = cmd.arg;
          Note(cmd.arg.empty() ? "system prompt removed"
                               : absl::StrCat("system prompt set (", cmd.arg.size(), " chars)"));
          break;
        case SlashCommand::Kind::kMaxTokens:
          SetMaxTokens(cmd.arg);
          break;
        case SlashCommand::Kind::kHelp:
          Write(kHelp);
          break;
        case SlashCommand::Kind::kQuit:
          return;
        case SlashCommand::Kind::kUnknown:
          Note(absl::StrCat("unknown command ", cmd.arg, "; /help lists them"));
          break;
      }
    }
  }

 private:
  HttpRequest Request(const char* method, const char* path, std::string body) {
    HttpRequest req;
    req.method = method;
    req.target = o_.url.path + path;
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    if (!o_.api_key.empty()) req.headers.emplace_back("Authorization", "Bearer " + o_.api_key);
    req.body = std::move(body);
    return req;
  }

  std::string EffortName() const { return o_.settings.reasoning_effort.value_or("default"); }

  void Note(absl::string_view text) {
    Write(o_.color ? absl::StrCat("\x1b[2m", text, "\x1b[0m\n") : absl::StrCat(text, "\n"));
  }

  void SetEffort(const std::string& arg) {
    if (!arg.empty()) {
      absl::StatusOr<std::optional<std::string>> effort = ParseEffort(arg);
      if (!effort.ok()) {
        Note(std::string(effort.status().message()));
        return;
      }
      o_.settings.reasoning_effort = *effort;
    }
    Note(absl::StrCat("reasoning effort: ", EffortName()));
  }

  void SetMaxTokens(const std::string& arg) {
    if (!arg.empty()) {
      absl::StatusOr<std::optional<int64_t>> n = ParseMaxTokens(arg);
      if (!n.ok()) {
        Note(std::string(n.status().message()));
        return;
      }
      o_.settings.max_tokens = *n;
    }
    Note(absl::StrCat("max tokens: ", o_.settings.max_tokens
                                          ? std::to_string(*o_.settings.max_tokens)
                                          : std::string("default")));
  }

  void Turn(const std::string& text) {
    g_interrupted = false;
    HttpRequest req =
        Request("POST", "/chat/completions", conversation_.RequestBody(o_.settings, text).dump());
    req.headers.emplace_back("Accept", "text/event-stream");
    req.idle_timeout_s = 600;
    req.cancel = &g_interrupted;
    ReplyRenderer renderer(o_.color);
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    std::string stream_id;  // the completion id: what an explicit cancel names
    absl::StatusOr<HttpResponse> res =
        SendHttp(o_.url, req, [&](absl::string_view data) -> absl::Status {
          if (stream_id.empty()) {
            const Json chunk = Json::parse(data, nullptr, false);
            if (chunk.is_object() && chunk.value("id", Json()).is_string()) stream_id = chunk["id"];
          }
          absl::StatusOr<std::string> out = renderer.OnEvent(data, elapsed());
          if (!out.ok()) return out.status();
          Write(*out);
          return absl::OkStatus();
        });
    const double total = elapsed();
    Write(renderer.Finish());
    g_interrupted = false;
    if (!res.ok() && res.status().code() == absl::StatusCode::kCancelled && !stream_id.empty()) {
      // Closing the connection leaves the generation running for a resume (the gateway's
      // --stream-resume-grace-s); Ctrl-C means stop now. A 404 (resume off) is fine: the
      // disconnect already cancelled it.
      const std::string path = absl::StrCat("/chat/completions/", stream_id, "/cancel");
      HttpRequest cancel = Request("POST", path.c_str(), "");
      cancel.idle_timeout_s = 10;
      (void)SendHttp(o_.url, cancel);
    }
    if (!res.ok() && res.status().code() == absl::StatusCode::kCancelled) {
      Note(renderer.answer().empty() ? "[stopped; this turn is not kept]"
                                     : "[stopped; the partial answer is kept]");
    } else if (!res.ok()) {
      Note(absl::StrCat(
          "error: ",
          res.status().code() == absl::StatusCode::kUnavailable ? "the answer broke off: " : "",
          res.status().message()));
    } else if (res->status != 200) {
      Note(absl::StrCat("error: ", DescribeHttpError(res->status, res->body)));
      return;
    } else {
      Note(FormatStats(renderer.stats(), total, price_));
    }
    if (!renderer.answer().empty()) conversation_.AddTurn(text, renderer.answer());
  }

  ChatOptions o_;
  Conversation conversation_;
  std::optional<Price> price_;
};

}  // namespace

int RunChat(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> f = Flags::Parse(
      args, {"url", "model", "reasoning-effort", "system", "max-tokens", "temperature", "api-key"},
      {"no-color"});
  if (!f.ok()) {
    LogError(f.status());
    return 2;
  }
  ChatOptions o;
  std::string url = f->Get("url").value_or("http://127.0.0.1:8000/v1");
  absl::StatusOr<HttpUrl> parsed = ParseHttpUrl(url);
  if (!parsed.ok()) {
    LogError(parsed.status());
    return 2;
  }
  o.url = *parsed;
  if (o.url.path.empty()) o.url.path = "/v1";  // http://host:port means the API under /v1
  o.settings.model = f->Get("model").value_or("");
  o.settings.system = f->Get("system").value_or("");
  if (std::optional<std::string> e = f->Get("reasoning-effort")) {
    absl::StatusOr<std::optional<std::string>> effort = ParseEffort(*e);
    if (!effort.ok()) {
      LogError(effort.status());
      return 2;
    }
    o.settings.reasoning_effort = *effort;
  }
  if (f->Has("max-tokens")) {
    absl::StatusOr<int64_t> n = f->GetInt("max-tokens", 0);
    if (!n.ok() || *n < 1) {
      LogError(absl::InvalidArgumentError("--max-tokens must be a whole number >= 1"));
      return 2;
    }
    o.settings.max_tokens = *n;
  }
  if (f->Has("temperature")) {
    absl::StatusOr<double> t = f->GetDouble("temperature", 0);
    if (!t.ok() || *t < 0) {
      LogError(absl::InvalidArgumentError("--temperature must be a number >= 0"));
      return 2;
    }
    o.settings.temperature = *t;
  }
  o.api_key = f->Get("api-key").value_or("");
  if (o.api_key.empty()) {
    if (const char* k = std::getenv("MOESERVE_API_KEY"); k != nullptr) o.api_key = k;
  }
  const char* term = std::getenv("TERM");
  o.color = !f->Has("no-color") && isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr &&
            !(term != nullptr && std::string(term) == "dumb");

  // Ctrl-C interrupts the blocking reads and waits (no SA_RESTART) and sets the flag that
  // cancels the reply in progress.
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);

  ChatLoop chat(std::move(o));
  if (absl::Status st = chat.Connect(); !st.ok()) {
    fprintf(stderr, "moeserve chat: cannot start a chat with %s: %s\n", url.c_str(),
            std::string(st.message()).c_str());
    return 1;
  }
  chat.Run();
  return 0;
}

}  // namespace moeserve::cli
