#include "engine/tokenizer/added_tokens.h"

#include <utility>

#include "absl/strings/match.h"

namespace moeserve::engine::tokenizer_internal {
namespace {

// ASCII whitespace plus the multi-byte White_Space characters, for lstrip/rstrip.
size_t WhitespaceLengthAt(absl::string_view text, size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  if (c == ' ' || (c >= '\t' && c <= '\r')) return 1;
  const absl::string_view rest = text.substr(i);
  for (absl::string_view ws : {"\xC2\x85", "\xC2\xA0", "\xE1\x9A\x80", "\xE2\x80\xA8",
                               "\xE2\x80\xA9", "\xE2\x80\xAF", "\xE2\x81\x9F", "\xE3\x80\x80"}) {
    if (absl::StartsWith(rest, ws)) return ws.size();
  }
  if (rest.size() >= 3 && c == 0xE2 && static_cast<unsigned char>(rest[1]) == 0x80 &&
      static_cast<unsigned char>(rest[2]) <= 0x8A) {
    return 3;  // U+2000..U+200A
  }
  return 0;
}

size_t WhitespaceLengthBefore(absl::string_view text, size_t end) {
  for (size_t len = 1; len <= 3 && len <= end; ++len) {
    if (WhitespaceLengthAt(text, end - len) == len) return len;
  }
  return 0;
}

bool IsWordByte(absl::string_view text, size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  // Any non-ASCII character counts as part of a word (letters of other scripts).
  return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') ||
         ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  terminal_.push_back(-1);  // the root
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& content = tokens_[t].content;
    if (content.empty()) continue;
    int32_t node = 0;
    for (const char ch : content) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(ch);
      auto [it, inserted] = children_.try_emplace(key, static_cast<int32_t>(terminal_.size()));
      if (inserted) terminal_.push_back(-1);
      node = it->second;
    }
    if (terminal_[node] < 0) terminal_[node] = static_cast<int32_t>(t);  // first one wins
    first_byte_[static_cast<uint8_t>(content[0])] = true;
  }
}

bool AddedTokenMatcher::Acceptable(const AddedToken& token, absl::string_view text, size_t begin,
                                   size_t end) const {
  if (!token.single_word) return true;
  const bool left_ok = begin == 0 || !IsWordByte(text, begin - 1);
  const bool right_ok = end == text.size() || !IsWordByte(text, end);
  return left_ok && right_ok;
}

int32_t AddedTokenMatcher::LongestMatch(absl::string_view text, size_t at,
                                        bool match_special) const {
  int32_t node = 0;
  int32_t best = -1;
  for (size_t i = at; i < text.size(); ++i) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[i]);
    const auto it = children_.find(key);
    if (it == children_.end()) break;
    node = it->second;
    const int32_t t = terminal_[node];
    if (t >= 0 && (match_special || !tokens_[t].special) &&
        Acceptable(tokens_[t], text, at, i + 1)) {
      best = t;
    }
  }
  return best;
}

void AddedTokenMatcher::Split(absl::string_view text, bool match_special,
                              std::vector<Segment>* out) const {
  size_t text_begin = 0;  // start of the pending text segment
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (!first_byte_[static_cast<uint8_t>(text[i])]) {
      ++i;
      continue;
    }
    const int32_t t = LongestMatch(text, i, match_special);
    if (t < 0) {
      ++i;
      continue;
    }
    const AddedToken& token = tokens_[t];
    size_t text_end = i;
    if (token.lstrip) {
      while (text_end > text_begin) {
        const size_t len = WhitespaceLengthBefore(text, text_end);
        if (len == 0) break;
        text_end -= len;
      }
    }
    if (text_end > text_begin) {
      out->push_back(Segment{static_cast<uint32_t>(text_begin),
                             static_cast<uint32_t>(text_end - text_begin), -1});
    }
    out->push_back(
        Segment{static_cast<uint32_t>(i), static_cast<uint32_t>(token.content.size()), token.id});
    i += token.content.size();
    if (token.rstrip) {
      while (i < n) {
        const size_t len = WhitespaceLengthAt(text, i);
        if (len == 0) break;
        i += len;
      }
    }
    text_begin = i;
  }
  if (text_begin < n) {
    out->push_back(
        Segment{static_cast<uint32_t>(text_begin), static_cast<uint32_t>(n - text_begin), -1});
  }
}

}  // namespace moeserve::engine::tokenizer_internal
