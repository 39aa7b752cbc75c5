#include "engine/grammar/tool_call_constraint.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moeserve::engine::grammar {
namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

std::vector<int32_t> Concat(std::initializer_list<const std::vector<int32_t>*> parts) {
  std::vector<int32_t> out;
  for (const std::vector<int32_t>* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

absl::Status CheckIds(const std::vector<int32_t>& ids, int32_t vocab_size, const char* what,
                      bool required) {
  if (required && ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("tool-call grammar: '", what, "' is empty"));
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("tool-call grammar: '", what, "' has token ",
                                                     id, ", outside the vocabulary [0, ",
                                                     vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateToolCallGrammar(const ToolCallGrammar& g, int32_t vocab_size) {
  if (g.options.empty()) return absl::InvalidArgumentError("tool-call grammar: no options");
  absl::Status s = CheckIds(g.open, vocab_size, "open", false);
  if (s.ok()) s = CheckIds(g.tail, vocab_size, "tail", true);
  if (s.ok()) s = CheckIds(g.separator, vocab_size, "separator", false);
  if (s.ok()) s = CheckIds(g.close, vocab_size, "close", true);
  for (const ToolCallGrammar::Option& o : g.options) {
    if (!s.ok()) break;
    s = CheckIds(o.head, vocab_size, "head", true);
    if (s.ok() && o.arguments == nullptr) {
      s = absl::InvalidArgumentError("tool-call grammar: an option has no arguments schema");
    }
  }
  return s;
}

absl::StatusOr<std::shared_ptr<const ToolCallGrammar>> CompileToolCallSpec(
    const ToolCallSpec& spec, int32_t vocab_size) {
  auto g = std::make_shared<ToolCallGrammar>();
  g->open = spec.open;
  g->tail = spec.tail;
  g->separator = spec.separator;
  g->close = spec.close;
  g->parallel = spec.parallel;
  for (const ToolCallSpec::Option& o : spec.options) {
    absl::StatusOr<std::shared_ptr<const SchemaGraph>> schema = CompileJsonSchema(o.arguments);
    if (!schema.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tool_calls: arguments schema: ", schema.status().message()));
    }
    g->options.push_back({o.head, *std::move(schema)});
  }
  if (absl::Status s = ValidateToolCallGrammar(*g, vocab_size); !s.ok()) return s;
  return std::shared_ptr<const ToolCallGrammar>(std::move(g));
}

ToolCallConstraint::ToolCallConstraint(std::shared_ptr<const Vocabulary> vocab,
                                       std::shared_ptr<const ToolCallGrammar> grammar)
    : vocab_(std::move(vocab)), grammar_(std::move(grammar)) {
  paths_ = StartPaths();
  for (const Path& p : AfterCallPaths()) {
    if (std::find(after_call_first_.begin(), after_call_first_.end(), p.tokens[0]) ==
        after_call_first_.end()) {
      after_call_first_.push_back(p.tokens[0]);
    }
  }
}

std::vector<ToolCallConstraint::Path> ToolCallConstraint::StartPaths() const {
  std::vector<Path> paths;
  for (size_t i = 0; i < grammar_->options.size(); ++i) {
    paths.push_back({Concat({&grammar_->open, &grammar_->options[i].head}), static_cast<int>(i)});
  }
  return paths;
}

std::vector<ToolCallConstraint::Path> ToolCallConstraint::AfterCallPaths() const {
  const std::vector<int32_t> end = {vocab_->end_id()};
  std::vector<Path> paths = {{Concat({&grammar_->tail, &grammar_->close, &end}), kEnd}};
  if (grammar_->parallel) {
    for (size_t i = 0; i < grammar_->options.size(); ++i) {
      paths.push_back({Concat({&grammar_->tail, &grammar_->separator, &grammar_->options[i].head}),
                       static_cast<int>(i)});
    }
  }
  return paths;
}

void ToolCallConstraint::MaskLogits(absl::Span<float> logits) {
  if (arguments_ != nullptr) {
    // The arguments' own mask, except that the end token cannot end a call, while the markup
    // after the call may start once the arguments are complete JSON.
    std::vector<float> kept;
    for (int32_t id : after_call_first_) {
      kept.push_back(static_cast<size_t>(id) < logits.size() ? logits[static_cast<size_t>(id)]
                                                            : kMasked);
    }
    arguments_->MaskLogits(logits);
    const int32_t end = vocab_->end_id();
    if (end >= 0 && static_cast<size_t>(end) < logits.size()) logits[static_cast<size_t>(end)] = kMasked;
    if (arguments_->IsComplete()) {
      for (size_t i = 0; i < after_call_first_.size(); ++i) {
        const auto id = static_cast<size_t>(after_call_first_[i]);
        if (id < logits.size()) logits[id] = kept[i];
      }
    }
    return;
  }
  // Markup (or, once done, only the end token).
  std::vector<std::pair<size_t, float>> allowed;
  if (done_) {
    const int32_t end = vocab_->end_id();
    if (end >= 0 && static_cast<size_t>(end) < logits.size()) {
      allowed.emplace_back(static_cast<size_t>(end), logits[static_cast<size_t>(end)]);
    }
  }
  for (const Path& p : paths_) {
    const auto id = static_cast<size_t>(p.tokens[pos_]);
    if (id < logits.size()) allowed.emplace_back(id, logits[id]);
  }
  if (!started_ && lead_ < kMaxLead) {
    for (int32_t w : vocab_->whitespace()) {
      if (static_cast<size_t>(w) < logits.size()) allowed.emplace_back(w, logits[static_cast<size_t>(w)]);
    }
  }
  std::fill(logits.begin(), logits.end(), kMasked);
  for (const auto& [id, value] : allowed) logits[id] = value;
}

absl::Status ToolCallConstraint::Refuse(int32_t token) const {
  return absl::FailedPreconditionError(
      absl::StrCat("token ", token, " does not continue the forced tool call"));
}

absl::Status ToolCallConstraint::AcceptForced(int32_t token) {
  if (!started_ && lead_ < kMaxLead &&
      std::binary_search(vocab_->whitespace().begin(), vocab_->whitespace().end(), token) &&
      std::none_of(paths_.begin(), paths_.end(),
                   [&](const Path& p) { return p.tokens[pos_] == token; })) {
    ++lead_;
    return absl::OkStatus();
  }
  std::vector<Path> kept;
  for (const Path& p : paths_) {
    if (p.tokens[pos_] == token) kept.push_back(p);
  }
  if (kept.empty()) return Refuse(token);
  started_ = true;
  paths_ = std::move(kept);
  ++pos_;
  for (const Path& p : paths_) {
    if (p.tokens.size() != pos_) continue;
    // A path is complete (the shortest wins; markup paths differ before they end).
    const int next = p.next;
    paths_.clear();
    pos_ = 0;
    if (next == kEnd) {
      done_ = true;
    } else {
      arguments_ = std::make_unique<TokenConstraint>(
          vocab_, grammar_->options[static_cast<size_t>(next)].arguments);
    }
    break;
  }
  return absl::OkStatus();
}

absl::Status ToolCallConstraint::Accept(int32_t token) {
  if (done_) return token == vocab_->end_id() ? absl::OkStatus() : Refuse(token);
  if (arguments_ != nullptr) {
    if (arguments_->IsComplete() &&
        std::find(after_call_first_.begin(), after_call_first_.end(), token) !=
            after_call_first_.end()) {
      arguments_.reset();
      paths_ = AfterCallPaths();
      pos_ = 0;
      return AcceptForced(token);
    }
    if (token == vocab_->end_id()) return Refuse(token);
    return arguments_->Accept(token);
  }
  return AcceptForced(token);
}

}  // namespace moeserve::engine::grammar
