#include "engine/reasoning.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moeserve::engine {
namespace {

constexpr absl::string_view kOpen = "<think>";
constexpr absl::string_view kClose = "</think>";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Length of the longest suffix of `text` that is a proper prefix of `tag`.
size_t PartialTagSuffix(absl::string_view text, absl::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

}  // namespace

ReasoningSplitter::ReasoningSplitter(bool starts_in_reasoning)
    : phase_(Phase::kStart), in_reasoning_(starts_in_reasoning) {}

ReasoningSplitter::Delta ReasoningSplitter::Add(absl::string_view chunk) {
  pending_.append(chunk.data(), chunk.size());
  Delta out;
  absl::string_view buf = pending_;
  bool need_more = false;
  while (!buf.empty() && !need_more) {
    switch (phase_) {
      case Phase::kStart: {
        size_t ws = 0;
        while (ws < buf.size() && IsSpace(buf[ws])) ++ws;
        const absl::string_view rest = buf.substr(ws);
        if (rest.size() >= kOpen.size() && rest.substr(0, kOpen.size()) == kOpen) {
          buf.remove_prefix(ws + kOpen.size());
          in_reasoning_ = true;
          phase_ = Phase::kAfterOpen;
        } else if (rest.empty() || kOpen.substr(0, rest.size()) == rest) {
          need_more = true;  // whitespace and/or a prefix of "<think>" so far
        } else {
          phase_ = in_reasoning_ ? Phase::kReasoning : Phase::kContent;
        }
        break;
      }
      case Phase::kAfterOpen:
        if (buf.front() == '\n') buf.remove_prefix(1);
        phase_ = Phase::kReasoning;
        break;
      case Phase::kReasoning: {
        const size_t pos = buf.find(kClose);
        if (pos != absl::string_view::npos) {
          out.reasoning.append(buf.data(), pos);
          buf.remove_prefix(pos + kClose.size());
          in_reasoning_ = false;
          phase_ = Phase::kAfterClose;
        } else {
          const size_t keep = PartialTagSuffix(buf, kClose);
          out.reasoning.append(buf.data(), buf.size() - keep);
          buf.remove_prefix(buf.size() - keep);
          need_more = true;
        }
        break;
      }
      case Phase::kAfterClose: {
        size_t nl = 0;
        while (nl < buf.size() && buf[nl] == '\n') ++nl;
        buf.remove_prefix(nl);
        if (!buf.empty()) phase_ = Phase::kContent;
        break;
      }
      case Phase::kContent:
        out.content.append(buf.data(), buf.size());
        buf = absl::string_view();
        break;
    }
  }
  pending_ = std::string(buf);
  return out;
}

ReasoningSplitter::Delta ReasoningSplitter::Flush() {
  Delta out;
  std::string& target = in_reasoning_ ? out.reasoning : out.content;
  target = std::move(pending_);
  pending_.clear();
  if (phase_ == Phase::kStart && !target.empty()) {
    phase_ = in_reasoning_ ? Phase::kReasoning : Phase::kContent;
  }
  return out;
}

absl::StatusOr<int64_t> ThinkingBudget::ForEffort(absl::string_view effort) const {
  if (effort == "low") return low;
  if (effort == "medium") return medium;
  if (effort == "high") return high;
  return absl::InvalidArgumentError(absl::StrCat(
      "reasoning_effort \"", effort, "\" is not one of \"low\", \"medium\", \"high\""));
}

ThinkingBudgetEnforcer::ThinkingBudgetEnforcer(int64_t budget, std::vector<int32_t> close_ids)
    : budget_(budget), close_ids_(std::move(close_ids)) {}

absl::Span<const int32_t> ThinkingBudgetEnforcer::AtStart() {
  if (done_ || budget_ > 0) return {};
  done_ = true;
  forced_ = true;
  return close_ids_;
}

absl::Span<const int32_t> ThinkingBudgetEnforcer::OnReasoningToken(int32_t token) {
  if (done_) return {};
  if (!close_ids_.empty() && token == close_ids_.front()) {
    done_ = true;
    return {};
  }
  ++used_;
  if (used_ < budget_) return {};
  done_ = true;
  forced_ = true;
  return close_ids_;
}

}  // namespace moeserve::engine
