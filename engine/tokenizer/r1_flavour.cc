// MakeR1TokenizerJson: a surgical rewrite of two added_tokens entries, leaving every other byte
// of tokenizer.json as it was (re-serialising the whole file would reorder the vocab keys).
#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {
namespace {

constexpr std::pair<int64_t, const char*> kR1Tokens[] = {{128798, "<think>"}, {128799, "</think>"}};

// A minimal scanner over already-validated JSON, to find byte ranges of values.
class JsonScanner {
 public:
  explicit JsonScanner(absl::string_view text) : text_(text) {}

  size_t pos() const { return pos_; }
  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }
  void SkipSpace() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\n' || Peek() == '\r' || Peek() == '\t')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  // Skips a string starting at pos_ and returns its raw contents (escapes left as they are).
  absl::string_view SkipString() {
    const size_t begin = ++pos_;
    while (!AtEnd() && Peek() != '"') pos_ += Peek() == '\\' ? 2 : 1;
    const absl::string_view raw = text_.substr(begin, pos_ - begin);
    ++pos_;
    return raw;
  }
  void SkipValue() {
    SkipSpace();
    if (Peek() == '"') {
      SkipString();
      return;
    }
    if (Peek() == '{' || Peek() == '[') {
      int depth = 0;
      do {
        const char c = Peek();
        if (c == '"') {
          SkipString();
          continue;
        }
        if (c == '{' || c == '[') ++depth;
        if (c == '}' || c == ']') --depth;
        ++pos_;
      } while (depth > 0 && !AtEnd());
      return;
    }
    while (!AtEnd() && absl::string_view(",}] \t\r\n").find(Peek()) == absl::string_view::npos) {
      ++pos_;
    }
  }

 private:
  absl::string_view text_;
  size_t pos_ = 0;
};

// Byte ranges of the elements of the top-level "added_tokens" array.
std::vector<std::pair<size_t, size_t>> AddedTokenRanges(absl::string_view text) {
  std::vector<std::pair<size_t, size_t>> ranges;
  JsonScanner scan(text);
  if (!scan.Consume('{')) return ranges;
  while (true) {
    scan.SkipSpace();
    if (scan.Peek() != '"') return ranges;
    const absl::string_view key = scan.SkipString();
    if (!scan.Consume(':')) return ranges;
    if (key != "added_tokens") {
      scan.SkipValue();
    } else {
      if (!scan.Consume('[')) return ranges;
      scan.SkipSpace();
      while (scan.Peek() == '{') {
        const size_t begin = scan.pos();
        scan.SkipValue();
        ranges.emplace_back(begin, scan.pos());
        if (!scan.Consume(',')) break;
        scan.SkipSpace();
      }
      return ranges;
    }
    if (!scan.Consume(',')) return ranges;
  }
}

}  // namespace

absl::StatusOr<std::string> MakeR1TokenizerJson(const std::string& v3_tokenizer_json) {
  const nlohmann::json root = nlohmann::json::parse(v3_tokenizer_json, nullptr, false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json is not a JSON object");
  }
  // (begin, end, replacement), applied back to front.
  std::vector<std::tuple<size_t, size_t, std::string>> edits;
  for (const auto& [begin, end] : AddedTokenRanges(v3_tokenizer_json)) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::parse(
        absl::string_view(v3_tokenizer_json).substr(begin, end - begin), nullptr, false);
    if (entry.is_discarded() || !entry.is_object() || !entry.contains("id") ||
        !entry["id"].is_number_integer()) {
      continue;
    }
    for (const auto& [id, content] : kR1Tokens) {
      if (entry["id"].get<int64_t>() != id) continue;
      entry["content"] = content;
      entry["normalized"] = true;
      entry["special"] = false;
      edits.emplace_back(begin, end,
                         entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
  }
  if (edits.size() != std::size(kR1Tokens)) {
    return absl::InvalidArgumentError(
        "tokenizer.json lacks added tokens 128798 and 128799 (not a DeepSeek-V3 tokenizer)");
  }
  std::string out = v3_tokenizer_json;
  std::sort(edits.begin(), edits.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
  for (const auto& [begin, end, replacement] : edits) out.replace(begin, end - begin, replacement);
  return out;
}

}  // namespace moeserve::engine
