#ifndef MOESERVE_TOOLS_MOESERVE_CHAT_SESSION_H_
#define MOESERVE_TOOLS_MOESERVE_CHAT_SESSION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

// The terminal-independent part of `moeserve chat`: the conversation sent to the gateway, the
// slash commands, and turning a streamed reply into terminal text. No I/O; thread-compatible.
namespace moeserve::cli {

struct ChatSettings {
  std::string model;
  std::optional<std::string> reasoning_effort;  // low | medium | high; unset: the server's
  std::string system;                           // "" for none
  std::optional<int64_t> max_tokens;
  std::optional<double> temperature;
};

// Earlier turns as the chat template expects them back: the user's text and the assistant's
// answer only (R1's template drops reasoning from history, so it is never sent).
class Conversation {
 public:
  // The streaming /v1/chat/completions body for `user_text` after the history.
  nlohmann::json RequestBody(const ChatSettings& settings, const std::string& user_text) const;
  void AddTurn(std::string user_text, std::string answer);
  void Reset() { turns_.clear(); }
  size_t turns() const { return turns_.size(); }

 private:
  std::vector<std::pair<std::string, std::string>> turns_;
};

struct SlashCommand {
  enum class Kind { kNone, kReset, kEffort, kSystem, kMaxTokens, kHelp, kQuit, kUnknown };
  Kind kind = Kind::kNone;  // kNone: an ordinary message
  std::string arg;          // the rest of the line, trimmed
};

// "/reset", "/effort high", "/system Be brief.", "/max-tokens 100", "/help", "/quit" (or
// "/exit"). A line that
// does not start with '/' is a message (kNone).
SlashCommand ParseSlashCommand(absl::string_view line);

// "low" | "medium" | "high" -> itself; "default" -> unset; anything else InvalidArgument.
absl::StatusOr<std::optional<std::string>> ParseEffort(absl::string_view value);

// A whole number >= 1 -> itself; "default" -> unset (the gateway's default); else InvalidArgument.
absl::StatusOr<std::optional<int64_t>> ParseMaxTokens(absl::string_view value);

// One row of GET /v1/prices (USD per million tokens).
struct Price {
  std::string currency = "USD";
  double input_cache_hit = 0;
  double input_cache_miss = 0;
  double output = 0;
};

// The row for `model` in a GET /v1/prices body; nullopt when there is none.
std::optional<Price> FindPrice(const nlohmann::json& prices, const std::string& model);

struct ReplyStats {
  bool has_usage = false;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt_cache_hit_tokens
  int64_t completion_tokens = 0;
  int64_t reasoning_tokens = 0;
  double first_token_s = -1;   // first reasoning or answer text; -1 when none came
  double first_answer_s = -1;  // first answer text
};

// "(prompt 11, cached 0, reasoning 257, answer 143 tokens; first token 0.08 s, first answer
// 2.53 s; cost USD 0.000012)". Parts without data are left out.
std::string FormatStats(const ReplyStats& stats, double total_s, const std::optional<Price>& price);

// Turns the SSE events of one streamed reply into terminal text: reasoning dim (SGR 2), the
// answer in normal text after a blank line. Without `color`, no escape sequences at all.
class ReplyRenderer {
 public:
  explicit ReplyRenderer(bool color) : color_(color) {}

  // One event's data, `now_s` seconds after the request was sent; returns what to print.
  // An error event is Unavailable with the server's message; a malformed event Internal.
  absl::StatusOr<std::string> OnEvent(absl::string_view data, double now_s);
  // What ends the reply on screen (attributes reset, a final newline when text was printed).
  std::string Finish();

  const std::string& answer() const { return answer_; }
  const ReplyStats& stats() const { return stats_; }

 private:
  enum class Phase { kNone, kReasoning, kAnswer };

  bool color_;
  Phase phase_ = Phase::kNone;
  std::string answer_;
  ReplyStats stats_;
};

}  // namespace moeserve::cli

#endif  // MOESERVE_TOOLS_MOESERVE_CHAT_SESSION_H_
