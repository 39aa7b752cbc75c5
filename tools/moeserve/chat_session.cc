#include "tools/moeserve/chat_session.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace moeserve::cli {
namespace {

using Json = nlohmann::json;

constexpr char kDim[] = "\x1b[2m";
constexpr char kReset[] = "\x1b[0m";

int64_t IntField(const Json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

double NumberField(const Json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

std::string StringField(const Json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Json Conversation::RequestBody(const ChatSettings& settings, const std::string& user_text) const {
  Json messages = Json::array();
  if (!settings.system.empty()) {
    messages.push_back({{"role", "system"}, {"content", settings.system}});
  }
  for (const auto& [user, answer] : turns_) {
    messages.push_back({{"role", "user"}, {"content", user}});
    messages.push_back({{"role", "assistant"}, {"content", answer}});
  }
  messages.push_back({{"role", "user"}, {"content", user_text}});
  Json body = {{"model", settings.model},
               {"messages", std::move(messages)},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (settings.reasoning_effort) body["reasoning_effort"] = *settings.reasoning_effort;
  if (settings.max_tokens) body["max_tokens"] = *settings.max_tokens;
  if (settings.temperature) body["temperature"] = *settings.temperature;
  return body;
}

void Conversation::AddTurn(std::string user_text, std::string answer) {
  turns_.emplace_back(std::move(user_text), std::move(answer));
}

SlashCommand ParseSlashCommand(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  SlashCommand cmd;
  if (line.empty() || line.front() != '/') return cmd;
  const size_t space = line.find_first_of(" \t");
  const absl::string_view name = line.substr(0, space);
  if (space != absl::string_view::npos) {
    cmd.arg = std::string(absl::StripAsciiWhitespace(line.substr(space)));
  }
  if (name == "/reset") {
    cmd.kind = SlashCommand::Kind::kReset;
  } else if (name == "/effort") {
    cmd.kind = SlashCommand::Kind::kEffort;
  } else if (name == "/system") {
    cmd.kind = SlashCommand::Kind::kSystem;
  } else if (name == "/max-tokens") {
    cmd.kind = SlashCommand::Kind::kMaxTokens;
  } else if (name == "/help" || name == "/?") {
    cmd.kind = SlashCommand::Kind::kHelp;
  } else if (name == "/quit" || name == "/exit") {
    cmd.kind = SlashCommand::Kind::kQuit;
  } else {
    cmd.kind = SlashCommand::Kind::kUnknown;
    cmd.arg = std::string(name);
  }
  return cmd;
}

absl::StatusOr<std::optional<std::string>> ParseEffort(absl::string_view value) {
  if (value == "low" || value == "medium" || value == "high") return std::string(value);
  if (value == "default") return std::optional<std::string>();
  return absl::InvalidArgumentError(
      absl::StrCat("reasoning effort '", value, "' is not one of low, medium, high, default"));
}

absl::StatusOr<std::optional<int64_t>> ParseMaxTokens(absl::string_view value) {
  if (value == "default") return std::optional<int64_t>();
  int64_t n = 0;
  if (!absl::SimpleAtoi(value, &n) || n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max tokens '", value, "' is not a whole number >= 1 (or default)"));
  }
  return n;
}

std::optional<Price> FindPrice(const Json& prices, const std::string& model) {
  if (!prices.is_object()) return std::nullopt;
  auto data = prices.find("data");
  if (data == prices.end() || !data->is_array()) return std::nullopt;
  for (const Json& row : *data) {
    if (!row.is_object() || StringField(row, "model") != model) continue;
    Price p;
    if (std::string c = StringField(prices, "currency"); !c.empty()) p.currency = c;
    p.input_cache_hit = NumberField(row, "input_cache_hit_per_million");
    p.input_cache_miss = NumberField(row, "input_cache_miss_per_million");
    p.output = NumberField(row, "output_per_million");
    return p;
  }
  return std::nullopt;
}

std::string FormatStats(const ReplyStats& s, double total_s, const std::optional<Price>& price) {
  std::vector<std::string> groups;
  if (s.has_usage) {
    groups.push_back(absl::StrCat("prompt ", s.prompt_tokens, ", cached ", s.cached_tokens,
                                  ", reasoning ", s.reasoning_tokens, ", answer ",
                                  s.completion_tokens - s.reasoning_tokens, " tokens"));
  }
  std::vector<std::string> times;
  if (s.first_token_s >= 0) times.push_back(absl::StrFormat("first token %.2f s", s.first_token_s));
  if (s.first_answer_s >= 0) {
    times.push_back(absl::StrFormat("first answer %.2f s", s.first_answer_s));
  }
  times.push_back(absl::StrFormat("total %.2f s", total_s));
  groups.push_back(absl::StrJoin(times, ", "));
  if (s.has_usage && price) {
    const double cost =
        (static_cast<double>(s.cached_tokens) * price->input_cache_hit +
         static_cast<double>(s.prompt_tokens - s.cached_tokens) * price->input_cache_miss +
         static_cast<double>(s.completion_tokens) * price->output) /
        1e6;
    groups.push_back(absl::StrFormat("cost %s %.6f", price->currency, cost));
  }
  return absl::StrCat("(", absl::StrJoin(groups, "; "), ")");
}

absl::StatusOr<std::string> ReplyRenderer::OnEvent(absl::string_view data, double now_s) {
  if (data == "[DONE]") return std::string();
  Json j = Json::parse(data.begin(), data.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InternalError(absl::StrCat("not a JSON event: ", data.substr(0, 200)));
  }
  if (auto err = j.find("error"); err != j.end()) {
    std::string message = err->is_object() ? StringField(*err, "message") : std::string();
    return absl::UnavailableError(message.empty() ? "the server reported an error" : message);
  }
  if (auto usage = j.find("usage"); usage != j.end() && usage->is_object()) {
    stats_.has_usage = true;
    stats_.prompt_tokens = IntField(*usage, "prompt_tokens");
    stats_.completion_tokens = IntField(*usage, "completion_tokens");
    stats_.cached_tokens = IntField(*usage, "prompt_cache_hit_tokens");
    if (auto d = usage->find("completion_tokens_details"); d != usage->end() && d->is_object()) {
      stats_.reasoning_tokens = IntField(*d, "reasoning_tokens");
    }
  }
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty()) return std::string();
  const Json& choice = choices->front();
  auto delta = choice.is_object() ? choice.find("delta") : choice.end();
  if (!choice.is_object() || delta == choice.end() || !delta->is_object()) return std::string();
  std::string out;
  const std::string reasoning = StringField(*delta, "reasoning_content");
  const std::string content = StringField(*delta, "content");
  if (!reasoning.empty()) {
    if (stats_.first_token_s < 0) stats_.first_token_s = now_s;
    if (phase_ == Phase::kNone) {
      phase_ = Phase::kReasoning;
      if (color_) out += kDim;
    }
    out += reasoning;  // after the answer began (not seen from R1) it still prints
  }
  if (!content.empty()) {
    if (stats_.first_token_s < 0) stats_.first_token_s = now_s;
    if (phase_ != Phase::kAnswer) {
      if (phase_ == Phase::kReasoning) absl::StrAppend(&out, color_ ? kReset : "", "\n\n");
      phase_ = Phase::kAnswer;
      stats_.first_answer_s = now_s;
    }
    out += content;
    answer_ += content;
  }
  return out;
}

std::string ReplyRenderer::Finish() {
  std::string out;
  if (phase_ == Phase::kReasoning && color_) out += kReset;
  if (phase_ != Phase::kNone) out += "\n";
  return out;
}

}  // namespace moeserve::cli
