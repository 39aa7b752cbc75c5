// Case mapping for the scripts chat templates meet in practice (ASCII, Latin-1, Latin Extended-A,
// Greek, Cyrillic, fullwidth ASCII); other code points are left as they are.
#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "engine/chat/js_text.h"

namespace moeserve::engine::chat {
namespace {

uint32_t UpperOf(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if (c == 0xB5) return 0x39C;
  if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
  if (c == 0xFF) return 0x178;
  if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) {
    return c & ~1u;
  }
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c % 2 == 0) ? c - 1 : c;
  if (c == 0x131) return 'I';
  if (c == 0x17F) return 'S';
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c == 0x3AC) return 0x386;
  if (c >= 0x3AD && c <= 0x3AF) return c - 37;
  if (c == 0x3CC) return 0x38C;
  if (c == 0x3CD || c == 0x3CE) return c - 63;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
  return c;
}

uint32_t LowerOf(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) {
    return c | 1u;
  }
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c % 2 == 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

void AppendUpper(std::string* out, uint32_t cp) {
  if (cp == 0xDF) {  // ß
    *out += "SS";
    return;
  }
  AppendUtf8(out, UpperOf(cp));
}

void AppendLower(std::string* out, uint32_t cp) {
  if (cp == 0x130) {  // İ lowercases to i + combining dot above.
    *out += "i\xCC\x87";
    return;
  }
  AppendUtf8(out, LowerOf(cp));
}

bool IsAsciiWord(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Collation key pieces for one code point: (group, folded, case) where group orders
// whitespace/punctuation < digits < letters.
std::tuple<int, uint32_t, int> CollationKey(uint32_t cp) {
  const uint32_t folded = LowerOf(cp);
  const int lower_first = folded == cp ? 0 : 1;
  if (cp >= '0' && cp <= '9') return {1, cp, 0};
  if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp >= 0xC0) {
    return {2, folded, lower_first};
  }
  return {0, cp, 0};
}

}  // namespace

std::string JsToUpper(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) AppendUpper(&out, DecodeUtf8(s, &pos));
  return out;
}

std::string JsToLower(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) AppendLower(&out, DecodeUtf8(s, &pos));
  return out;
}

std::string JsTitle(absl::string_view s) {
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i) {
    if (IsAsciiWord(out[i]) && (i == 0 || !IsAsciiWord(out[i - 1])) && out[i] >= 'a' &&
        out[i] <= 'z') {
      out[i] = static_cast<char>(out[i] - 32);
    }
  }
  return out;
}

std::string JsCapitalize(absl::string_view s) {
  if (s.empty()) return "";
  size_t pos = 0;
  const uint32_t cp = DecodeUtf8(s, &pos);
  std::string out;
  if (cp >= 0x10000) {
    out = std::string(s);  // charAt(0) is a lone surrogate; toUpperCase leaves it alone.
    return out;
  }
  AppendUpper(&out, cp);
  out.append(s.data() + pos, s.size() - pos);
  return out;
}

int JsLocaleCompare(absl::string_view a, absl::string_view b) {
  std::vector<std::tuple<int, uint32_t, int>> ka, kb;
  for (size_t pos = 0; pos < a.size();) ka.push_back(CollationKey(DecodeUtf8(a, &pos)));
  for (size_t pos = 0; pos < b.size();) kb.push_back(CollationKey(DecodeUtf8(b, &pos)));
  // Primary: group and folded letter; tertiary: case, compared only when primary ties.
  const size_t n = std::min(ka.size(), kb.size());
  for (size_t i = 0; i < n; ++i) {
    const auto pa = std::make_pair(std::get<0>(ka[i]), std::get<1>(ka[i]));
    const auto pb = std::make_pair(std::get<0>(kb[i]), std::get<1>(kb[i]));
    if (pa != pb) return pa < pb ? -1 : 1;
  }
  if (ka.size() != kb.size()) return ka.size() < kb.size() ? -1 : 1;
  for (size_t i = 0; i < n; ++i) {
    if (std::get<2>(ka[i]) != std::get<2>(kb[i])) return std::get<2>(ka[i]) < std::get<2>(kb[i]) ? -1 : 1;
  }
  return 0;
}

}  // namespace moeserve::engine::chat
